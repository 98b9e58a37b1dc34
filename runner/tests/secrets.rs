//! A Redis password never reaches the screen, whatever it holds: with `/ @ : ? # %` in it,
//! written in the spec or taken from `${...}`, in a URL that parses or one that does not, for
//! one server and for a cluster, in `validate`, `run` and `run --report json`, on success and on
//! failure.

mod common;

use std::path::Path;

use common::services::RedisServer;
use common::{runner, stderr, stdout, temp};

/// Every piece of the password contains this, so any fragment of it on the screen is found.
const MARK: &str = "sekret";
const PASSWORD: &str = "sekret1/sekret2@sekret3:sekret4?sekret5#sekret6%sekret7";

/// `PASSWORD` percent-encoded, as a URL must carry it.
fn encoded() -> String {
    PASSWORD
        .replace('%', "%25")
        .replace('/', "%2F")
        .replace('@', "%40")
        .replace(':', "%3A")
        .replace('?', "%3F")
        .replace('#', "%23")
}

fn spec(dir: &Path, url: &str, dead_letter: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("rows.csv"), "key,label\nk1,a\nk2,b\nk3\n").unwrap();
    let path = dir.join("spec.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\nkind = \"csv\"\non_error = \"dead-letter\"\ndead_letter = {{ url = \"{dead_letter}\", list = \"rejected\" }}\n\
             config = {{ url = \"rows.csv\" }}\n\n[sink]\nkind = \"redis\"\nconfig = {{ url = \"{url}\", value = \"label\", retry_seconds = 1 }}\n"
        ),
    )
    .unwrap();
    path
}

/// Runs `runner ARGS SPEC` with `REDIS_URL` set, and checks no output shows the password;
/// returns the exit status and standard error.
fn check(args: &[&str], spec: &Path, redis_url: &str) -> (Option<i32>, String) {
    let output = runner().args(args).arg(spec).env("REDIS_URL", redis_url).output().unwrap();
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(!out.contains(MARK) && !err.contains(MARK), "{args:?} with {redis_url} showed the password:\n{out}\n{err}");
    (output.status.code(), err)
}

#[test]
fn a_redis_password_is_never_shown_whatever_it_holds() {
    let Some(redis) = RedisServer::start() else { return };
    redis::cmd("CONFIG").arg("SET").arg("requirepass").arg(PASSWORD).query::<()>(&mut redis.connection()).unwrap();
    let dir = temp();
    let port = redis.port;
    let raw = format!("redis://:{PASSWORD}@127.0.0.1:{port}/0");
    let good = format!("redis://:{}@127.0.0.1:{port}/0", encoded());
    let wrong = format!("redis://:{}x@127.0.0.1:{port}/0", encoded());
    let cluster_raw = format!("redis+cluster://user:{PASSWORD}@127.0.0.1:{port},127.0.0.1:1");
    for url in [&raw, &good, &wrong, &cluster_raw] {
        // Through the environment, and written in the spec itself.
        for (in_spec, env) in [("${REDIS_URL}", url.as_str()), (url.as_str(), "unused")] {
            let spec = spec(dir.path(), in_spec, in_spec);
            for args in [&["validate"][..], &["run"], &["run", "--report", "json"]] {
                let (code, err) = check(args, &spec, env);
                // An unencoded password is an invalid URL: refused at once, like any invalid spec.
                // A wrong one passes `validate` (which connects to nothing) and fails the run.
                let expected = match (url, args[0]) {
                    (url, _) if url == &good => 0,
                    (url, _) if url == &raw || url == &cluster_raw => 2,
                    (_, "validate") => 0,
                    _ => 1,
                };
                assert_eq!(code, Some(expected), "{args:?} {url}: {err}");
                if expected != 0 {
                    assert!(err.contains("***@"), "{args:?}: the URL is shown masked: {err}");
                }
            }
        }
    }
    // The percent-encoded password did reach Redis: the rows and the rejected one are there.
    let mut connection =
        redis::Client::open(format!("redis://:{}@127.0.0.1:{port}/0", encoded())).unwrap().get_connection().unwrap();
    let label: String = redis::cmd("GET").arg("k1").query(&mut connection).unwrap();
    assert_eq!(label, "a");
    let rejected: Vec<String> = redis::cmd("LRANGE").arg("rejected").arg(0).arg(-1).query(&mut connection).unwrap();
    assert!(!rejected.is_empty());
}
