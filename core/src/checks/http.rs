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
            h.url, h.expect_status
        )));
    }
    if let Some(want) = &h.body_contains {
        if !body.contains(want.as_str()) {
            return Err(Error::VerificationFailed(format!(
                "GET {} answered {status} without {want:?} in its body",
                h.url
            )));
        }
    }
    Ok(())
}

const MAX_BODY: usize = 1 << 20;

/// GETs `url`; returns the status code and the body (lossy UTF-8).
pub async fn get(url: &str, timeout: Duration) -> Result<(u16, String), Error> {
    let fail = |why: String| Error::VerificationFailed(format!("GET {url}: {why}"));
    let parsed =
        url::Url::parse(url).map_err(|e| Error::InvalidInput(format!("check URL {url:?}: {e}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| Error::InvalidInput(format!("check URL {url:?} has no host")))?
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
                "check URL {url:?}: scheme {other} is not http or https"
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
