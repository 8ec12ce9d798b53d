//! The limits layer on the clients a test builds itself: [`limits_checked`] wraps an HTTP
//! client so that every request it sends is held to AWS's documented limits
//! (`backstop_testbed::limits`, the same checker as the proxy in front of every moto) and a
//! request AWS would refuse fails the test where it is sent. [`FakeAws`](super::FakeAws) and
//! every `aws_smithy_mocks::mock_client!` of the tests send through it: aws-smithy-mocks
//! serialises each request and hands it to its HTTP client before it substitutes the output,
//! so a mock sees the request AWS would see.

use std::sync::Arc;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use backstop_testbed::{Limits, WireRequest};

/// `inner`, with every request it sends held to AWS's limits.
pub fn limits_checked(inner: SharedHttpClient) -> SharedHttpClient {
    SharedHttpClient::new(Checked {
        inner,
        limits: Arc::new(Limits::new()),
    })
}

#[derive(Debug)]
struct Checked {
    inner: SharedHttpClient,
    limits: Arc<Limits>,
}

impl HttpClient for Checked {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(CheckedConnector {
            inner: self.inner.http_connector(settings, components),
            limits: self.limits.clone(),
        })
    }
}

#[derive(Debug)]
struct CheckedConnector {
    inner: SharedHttpConnector,
    limits: Arc<Limits>,
}

impl HttpConnector for CheckedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let uri: http::Uri = request.uri().parse().unwrap_or_default();
        let host = uri
            .host()
            .map(str::to_string)
            .or_else(|| {
                headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("host"))
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_default();
        let target = uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into());
        let body = request.body().bytes().unwrap_or_default().to_vec();
        let broken = self.limits.check_request(&WireRequest {
            method: request.method(),
            target: &target,
            host: &host,
            headers: &headers,
            body: &body,
        });
        if !broken.is_empty() {
            let list: Vec<String> = broken.iter().map(|v| format!("- {v}")).collect();
            panic!("a request AWS would refuse:\n{}", list.join("\n"));
        }
        self.inner.call(request)
    }
}
