//! An S3-protocol server over a directory (each bucket a folder under it), on a loopback port:
//! what `cargo xtask run` starts so the flagship pipeline reads a real bucket, as the tests do.
//!
//! ```text
//! cargo run -p runner --example s3_server -- ROOT ACCESS_KEY SECRET_KEY
//! ```
//! Listens on a free port of 127.0.0.1 and prints `listening on http://127.0.0.1:PORT` once it
//! serves; runs until killed. Each line read from standard input makes it print `served N`: the
//! bytes of object bodies sent so far (what the benchmarks count).

#[path = "../tests/common/s3_fs.rs"]
mod s3_fs;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, access_key, secret_key] = args.as_slice() else {
        eprintln!("usage: s3_server ROOT ACCESS_KEY SECRET_KEY");
        std::process::exit(2);
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (_stop, thread) = s3_fs::serve(std::path::Path::new(root), listener, access_key, secret_key, served.clone())?;
    println!("listening on http://127.0.0.1:{port}");
    std::thread::spawn(move || {
        for _ in std::io::stdin().lines().map_while(Result::ok) {
            println!("served {}", served.load(std::sync::atomic::Ordering::Relaxed));
        }
    });
    let _ = thread.join();
    Ok(())
}
