//! `stackheap push TRACE --pyroscope URL`: send the run's pprof profile to a Pyroscope
//! server through its HTTP ingest API (`POST /ingest?format=pprof`, the profile as the
//! `profile` part of a multipart form), so profiles of many machines land in the
//! continuous-profiling system already in place.
//!
//! Plain HTTP only, written over a `TcpStream`: no TLS stack is linked into the
//! profiler. For an `https://` server, push to a local agent (Grafana Alloy / Agent)
//! or a TLS-terminating proxy, or upload `profile.pb.gz` with your own client.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

/// Options of `stackheap push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// The trace file.
    pub trace: PathBuf,
    /// Pyroscope server, e.g. http://pyroscope:4040 (plain HTTP).
    #[arg(long, value_name = "URL")]
    pub pyroscope: String,
    /// Application name in Pyroscope [default: the program's file name].
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds to wait for the server.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// `http://host[:port][/prefix]` split into (host, port, path prefix).
fn parse_url(url: &str) -> Result<(String, u16, String)> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => bail!(
            "{url}: https is not supported by push (plain HTTP only); push to a local agent or proxy, or upload profile.pb.gz (stackheap report --format pprof) with your own client"
        ),
        _ => bail!("{url}: expected a URL like http://pyroscope:4040"),
    };
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    // `host`, `host:port`, `[v6]` or `[v6]:port`.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => (h, Some(p.strip_prefix(':').unwrap_or(p))),
            None => bail!("{url}: bad host"),
        },
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .with_context(|| format!("{url}: bad port {p:?}"))?,
        None => 80,
    };
    let host = if authority.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if host.is_empty() || host == "[]" {
        bail!("{url}: no host");
    }
    Ok((host, port, prefix.to_string()))
}

/// Percent-encode a query value.
fn query_escape(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// The ingest request: (path and query, content type, body).
pub fn ingest_request(
    prefix: &str,
    name: &str,
    from_s: u64,
    until_s: u64,
    profile: &[u8],
) -> (String, String, Vec<u8>) {
    let boundary = "stackheap-profile-boundary-7c1f3b2a";
    let mut body = Vec::with_capacity(profile.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pb.gz\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(profile);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let path = format!(
        "{prefix}/ingest?name={}&from={from_s}&until={until_s}&format=pprof&spyName=stackheap",
        query_escape(name)
    );
    (
        path,
        format!("multipart/form-data; boundary={boundary}"),
        body,
    )
}

/// `stackheap push`.
pub fn push(args: PushArgs) -> Result<ExitCode> {
    let (host, port, prefix) = parse_url(&args.pyroscope)?;
    let a = crate::analyze(&args.trace)?;
    let profile = stackheap_report::render::pprof::render(&a)?;
    let name = args.name.clone().unwrap_or_else(|| {
        let exe = a.program.exe.rsplit('/').next().unwrap_or("");
        if exe.is_empty() {
            "stackheap".into()
        } else {
            exe.to_string()
        }
    });
    let from_s = a.program.start_unix_ns / 1_000_000_000;
    let until_s = (a.program.start_unix_ns + a.duration_ns).div_ceil(1_000_000_000);
    let (path, content_type, body) = ingest_request(&prefix, &name, from_s, until_s, &profile);
    let timeout = Duration::from_secs(args.timeout.max(1));
    let server = format!("{host}:{port}");
    let addr = server
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {server}"))?
        .next()
        .with_context(|| format!("cannot resolve {server}"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {server}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {server}\r\nUser-Agent: stackheap/{}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(&body))
        .with_context(|| format!("cannot send the profile to {server}"))?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)
        .with_context(|| format!("no answer from {server}"))?;
    let reply = String::from_utf8_lossy(&reply);
    let status_line = reply.lines().next().unwrap_or("");
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{server} did not answer in HTTP: {status_line:?}"))?;
    if !(200..300).contains(&code) {
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").trim();
        let first = body.lines().next().unwrap_or("");
        bail!("{server} refused the profile: {status_line} {first}");
    }
    println!(
        "pushed {} ({} bytes of pprof, {} call stacks) to {} as {name}",
        args.trace.display(),
        profile.len(),
        a.sites.len(),
        args.pyroscope
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://pyro:4040").unwrap(),
            ("pyro".into(), 4040, "".into())
        );
        assert_eq!(
            parse_url("http://10.0.0.1/base/").unwrap(),
            ("10.0.0.1".into(), 80, "/base".into())
        );
        assert!(parse_url("https://pyro:4040")
            .unwrap_err()
            .to_string()
            .contains("https is not supported"));
        assert!(parse_url("pyro:4040").is_err());
        assert!(parse_url("http://pyro:x").is_err());
        assert_eq!(
            parse_url("http://[::1]:4040").unwrap(),
            ("[::1]".into(), 4040, "".into())
        );
    }

    #[test]
    fn request_is_a_multipart_form_with_the_profile() {
        let (path, ct, body) = ingest_request("", "my app", 10, 12, b"\x1f\x8bPROFILE");
        assert_eq!(
            path,
            "/ingest?name=my%20app&from=10&until=12&format=pprof&spyName=stackheap"
        );
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("name=\"profile\""));
        let part = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(&body[part..part + 9], b"\x1f\x8bPROFILE");
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    }
}
