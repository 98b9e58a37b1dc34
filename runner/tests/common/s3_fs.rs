//! An S3-protocol server (s3s-fs) over a directory, each bucket a folder under it: shared by the
//! tests' embedded server (`services::S3Server`) and the `s3_server` example that
//! `cargo xtask run` starts for the flagship job.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Serves `root` on `listener` (credentials `access_key`/`secret_key`) in a thread of its own,
/// until the returned sender is dropped or sent to; joining the thread then closes every open
/// connection, as when a server process dies. `served` counts the bytes of object bodies sent
/// (GET responses' `Content-Length`).
pub fn serve(
    root: &Path,
    listener: TcpListener,
    access_key: &str,
    secret_key: &str,
    served: Arc<AtomicU64>,
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
            let s3 = builder.build();
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let (s3, served) = (s3.clone(), served.clone());
                async move {
                    let get = request.method() == http::Method::GET;
                    let response = hyper::service::Service::call(&s3, request).await?;
                    let length = response.headers().get(http::header::CONTENT_LENGTH);
                    let length = length.and_then(|l| l.to_str().ok()?.parse::<u64>().ok());
                    if let (true, Some(length)) = (get, length) {
                        served.fetch_add(length, Ordering::Relaxed);
                    }
                    Ok::<_, s3s::HttpError>(response)
                }
            });
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
