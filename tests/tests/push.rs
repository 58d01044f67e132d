//! `stackheap push` against a local stand-in for Pyroscope's ingest API (a TCP listener
//! on 127.0.0.1 in this test; no network): the request is a POST to `/ingest` with the
//! run's pprof profile as the `profile` part of a multipart form, byte for byte the
//! `profile.pb.gz` of `stackheap report`; a refusal and an absent server are one-line
//! errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use stackheap_tests::{bin, scratch};

/// A recorded leak-demo trace and its full report directory.
fn leak_trace(name: &str) -> (PathBuf, PathBuf) {
    let out = scratch(name);
    let o = Command::new(bin("stackheap"))
        .args(["run", "--out"])
        .arg(&out)
        .arg("--")
        .arg(bin("leak"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trace = stackheap_tests::trace_in(&out);
    (trace, out)
}

/// Serve one request with `status`; returns (request head lines, body).
fn serve_one(
    listener: TcpListener,
    status: &'static str,
) -> std::thread::JoinHandle<(Vec<String>, Vec<u8>)> {
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            head.push(line);
        }
        let len: usize = head
            .iter()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("content-length");
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let mut w = stream;
        write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Length: 15\r\nConnection: close\r\n\r\nserver says no\n"
        )
        .unwrap();
        (head, body)
    })
}

fn push(trace: &Path, url: &str) -> std::process::Output {
    Command::new(bin("stackheap"))
        .args([
            "push",
            "--name",
            "leak demo",
            "--timeout",
            "20",
            "--pyroscope",
            url,
        ])
        .arg(trace)
        .output()
        .unwrap()
}

#[test]
fn push_sends_the_pprof_profile_to_the_ingest_api() {
    let (trace, out) = leak_trace("push-ok");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = serve_one(listener, "200 OK");
    let o = push(&trace, &format!("http://127.0.0.1:{port}/base"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (head, body) = server.join().unwrap();
    let request = &head[0];
    assert!(
        request.starts_with("POST /base/ingest?name=leak%20demo&from="),
        "{request}"
    );
    assert!(request.contains("&format=pprof"), "{request}");
    // from/until: the run's start and end, in seconds since the epoch.
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let start = j["program"]["start_unix_ns"].as_u64().unwrap();
    let query = |k: &str| -> u64 {
        let v = request.split(&format!("{k}=")).nth(1).unwrap();
        v.split(['&', ' ']).next().unwrap().parse().unwrap()
    };
    assert_eq!(query("from"), start / 1_000_000_000);
    assert!(query("until") >= query("from"));
    let ct = head
        .iter()
        .find_map(|l| l.strip_prefix("Content-Type: multipart/form-data; boundary="))
        .expect("multipart content type");
    // The one part is profile.pb.gz, byte for byte.
    let profile = std::fs::read(out.join("profile.pb.gz")).unwrap();
    let open = format!("--{ct}\r\n");
    assert!(body.starts_with(open.as_bytes()));
    let part_start = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let part_head = String::from_utf8_lossy(&body[..part_start]);
    assert!(part_head.contains("name=\"profile\""), "{part_head}");
    let close = format!("\r\n--{ct}--\r\n");
    assert!(body.ends_with(close.as_bytes()));
    assert_eq!(&body[part_start..body.len() - close.len()], &profile[..]);
}

#[test]
fn push_errors_are_one_line() {
    let (trace, _) = leak_trace("push-err");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = serve_one(listener, "400 Bad Request");
    let o = push(&trace, &format!("http://127.0.0.1:{port}"));
    server.join().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("400") && err.contains("server says no"),
        "{err}"
    );

    // Nobody listening on a port just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = push(&trace, &format!("http://127.0.0.1:{port}"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot connect"), "{err}");

    let o = push(&trace, "https://pyroscope.invalid");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("https is not supported"), "{err}");
}
