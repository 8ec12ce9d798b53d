//! The HTTP GET the deployment checks make: HTTP/1.1 over TCP, or TLS verified against the
//! system roots for `https://`, with a timeout. Just enough for a health endpoint: the status
//! and the first 1 MiB of the body.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::Error;
use crate::model::run::HttpCheck;

/// One HTTP check: the status it expects and, when given, text its body must contain.
pub async fn check(h: &HttpCheck) -> Result<(), Error> {
    let (status, body) = get(&h.url, Duration::from_secs(10)).await?;
    if status != h.expect_status {
        return Err(Error::VerificationFailed(format!(
            "GET {} answered {status}, expected {}",
            shown(&h.url),
            h.expect_status
        )));
    }
    if let Some(want) = &h.body_contains {
        if !body.contains(want.as_str()) {
            return Err(Error::VerificationFailed(format!(
                "GET {} answered {status} without the expected text in its body",
                shown(&h.url)
            )));
        }
    }
    Ok(())
}

/// A URL as messages show it: no user name or password, the query and fragment replaced by
/// `…` (a token in them must not reach execution history, events or reports), control
/// characters escaped; an unparsable one is not shown at all.
pub fn shown(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return "(an unparsable URL)".to_string();
    };
    let mut out = format!("{}://", parsed.scheme());
    if let Some(host) = parsed.host_str() {
        out.push_str(host);
    }
    if let Some(port) = parsed.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(parsed.path());
    if parsed.query().is_some() || parsed.fragment().is_some() {
        out.push('?');
        out.push('…');
    }
    out.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect()
}

const MAX_BODY: usize = 1 << 20;

/// GETs `url`; returns the status code and the body (lossy UTF-8).
pub async fn get(url: &str, timeout: Duration) -> Result<(u16, String), Error> {
    let fail = |why: String| Error::VerificationFailed(format!("GET {}: {why}", shown(url)));
    let parsed = url::Url::parse(url)
        .map_err(|e| Error::InvalidInput(format!("check URL {}: {e}", shown(url))))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| Error::InvalidInput(format!("check URL {} has no host", shown(url))))?
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let mut path = parsed.path().to_string();
    if let Some(q) = parsed.query() {
        path = format!("{path}?{q}");
    }
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: backstop-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    let work = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| fail(e.to_string()))?;
        match parsed.scheme() {
            "http" => exchange(tcp, &request).await,
            "https" => {
                let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| fail(e.to_string()))?
                .with_root_certificates(crate::db::tls::roots(None)?)
                .with_no_client_auth();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| fail(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                exchange(tls, &request).await
            }
            other => Err(Error::InvalidInput(format!(
                "check URL {}: scheme {other} is not http or https",
                shown(url)
            ))),
        }
        .map_err(|e| match e {
            Error::InvalidInput(m) => Error::InvalidInput(m),
            other => fail(other.to_string()),
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(fail(format!("no answer within {} s", timeout.as_secs()))),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> Result<(u16, String), Error> {
    let io = |e: std::io::Error| Error::VerificationFailed(e.to_string());
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 || buf.len() > MAX_BODY {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| Error::VerificationFailed("the answer is not HTTP".to_string()))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials_or_query() {
        assert_eq!(
            shown("https://ops:hunter2@shop.example.com:8443/health?token=s3cret#x"),
            "https://shop.example.com:8443/health?…"
        );
        assert_eq!(
            shown("http://shop.example.com/"),
            "http://shop.example.com/"
        );
        assert_eq!(shown("not a url hunter2"), "(an unparsable URL)");
        assert!(!shown("http://h/p%0Aq\u{7}").contains('\u{7}'));
    }
}
