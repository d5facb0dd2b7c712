//! The operator's Kubernetes client: kube's own stack (base URI, authentication, extra headers,
//! retries of transient server errors, connection timeouts, rustls), built here from kube's
//! `ConfigExt` parts rather than with `ClientBuilder::try_from` for one reason: the leader-election
//! fence ([`Fence`]) must be checked where bytes leave the process, not only when a request is
//! made. Two layers more: every request is counted, and every response's `Date` header measures
//! how far this process's clock is from the API server's (`crate::clock`).
//!
//! A request is checked against the fence when it enters the client (a write refused there is
//! never sent) and again by every socket write of every connection ([`FencedStream`]): a process
//! frozen past its Lease (a paused VM, `SIGSTOP`) may have requests that passed the first check
//! just before it froze, waiting for a connection or in a retry's backoff; when it resumes they
//! reach the socket, find the fence closed, and fail without a byte sent. A standby is not
//! fenced (it only reads and campaigns for the Lease with compare-and-swap writes).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Uri};
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use kube::client::{Body, ConfigExt};
use tower::{BoxError, ServiceBuilder};

use crate::{
    leader::Fence,
    metrics::{Metrics, requests},
};

/// A client for `config`, its requests counted in `metrics` and fenced by `fence`.
pub fn build(config: kube::Config, metrics: Arc<Metrics>, fence: Arc<Fence>) -> Result<kube::Client, kube::Error> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    let https = config.rustls_https_connector_with_connector(FencedConnector { inner: tcp, fence: fence.clone() })?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let http: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(connector);

    let clock = metrics.clone();
    // Every response says what time the API server has: the skew of this process's clock.
    let measure = tower::util::MapResponseLayer::new(move |res: http::Response<hyper::body::Incoming>| {
        let date = res.headers().get(http::header::DATE).and_then(|d| d.to_str().ok());
        if let Some(skew) = date.and_then(|d| crate::clock::skew_from(d, crate::clock::now_precise())) {
            clock.observe_clock_skew(skew);
        }
        res
    });
    let count = tower::util::MapRequestLayer::new(move |req: Request<Body>| {
        let (verb, resource) = requests::classify(req.method(), req.uri().path(), req.uri().query());
        if requests::is_write(verb) {
            tracing::debug!(verb, path = req.uri().path(), "write request");
        }
        metrics.observe_request(verb, &resource);
        req
    });
    let fenced = tower::filter::FilterLayer::new(move |req: Request<Body>| {
        let (verb, resource) = requests::classify(req.method(), req.uri().path(), req.uri().query());
        if requests::is_write(verb) && !fence.allows(resource == "leases") {
            return Err(BoxError::from("write refused: this process no longer holds the leader Lease"));
        }
        Ok(req)
    });
    let retry =
        config.default_retry.then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .layer(count)
        // Inside the retries: every attempt is checked.
        .layer(fenced)
        .layer(measure)
        .map_err(BoxError::from)
        .service(http);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// TCP connections whose writes pass the fence.
#[derive(Clone)]
struct FencedConnector {
    inner: HttpConnector,
    fence: Arc<Fence>,
}

impl tower::Service<Uri> for FencedConnector {
    type Response = FencedStream;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<FencedStream, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let fence = self.fence.clone();
        Box::pin(async move { Ok(FencedStream { inner: connecting.await?, fence }) })
    }
}

/// A TCP stream that refuses to write once the fence is closed.
struct FencedStream {
    inner: TokioIo<tokio::net::TcpStream>,
    fence: Arc<Fence>,
}

impl FencedStream {
    fn check(&self) -> io::Result<()> {
        if self.fence.allows_bytes() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "fenced: this process no longer holds the leader Lease",
            ))
        }
    }
}

impl hyper::rt::Read for FencedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for FencedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connection for FencedStream {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}
