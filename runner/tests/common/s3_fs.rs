//! An S3-protocol server (s3s-fs) over a directory, each bucket a folder under it: shared by the
//! tests' embedded server (`services::S3Server`) and the `s3_server` example that
//! `cargo xtask run` starts for the flagship job.

use std::net::TcpListener;
use std::path::Path;

/// Serves `root` on `listener` (credentials `access_key`/`secret_key`) in a thread of its own,
/// until the returned sender is dropped or sent to; joining the thread then closes every open
/// connection, as when a server process dies.
pub fn serve(
    root: &Path,
    listener: TcpListener,
    access_key: &str,
    secret_key: &str,
) -> std::io::Result<(tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>)> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use s3s::auth::SimpleAuth;
    use s3s::service::S3ServiceBuilder;

    listener.set_nonblocking(true)?;
    let filesystem = s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let auth = SimpleAuth::from_single(access_key, secret_key);
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        runtime.block_on(async move {
            let mut builder = S3ServiceBuilder::new(filesystem);
            builder.set_auth(auth);
            let service = builder.build();
            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            let http = Builder::new(TokioExecutor::new());
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((socket, _)) = accepted else { continue };
                        let connection = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                        tokio::spawn(async move { let _ = connection.await; });
                    }
                    _ = &mut stopped => break,
                }
            }
        });
    });
    Ok((stop, thread))
}
