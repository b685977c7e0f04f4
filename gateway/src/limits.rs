//! What one caller can hold of the gateway: connections (a cap on open connections,
//! `max_connections`; a TLS handshake bounded in time, off the accept loop) and time (a
//! request's head must arrive within `header_read_timeout`, its body within
//! `body_timeout`).
//! Without them a slow or idle client keeps a connection and a task as long as it likes,
//! and enough of them starve every device platform. Body sizes are capped per route in
//! `routes`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The gateway's listener: a connection is accepted only while fewer than the cap are
/// open (the next one waits in the kernel's backlog until one closes), and with TLS
/// configured each connection's handshake runs on a task of its own, bounded in time, so a
/// client that stalls its handshake holds up no one else's.
pub(crate) struct GatewayListener {
    ready: mpsc::Receiver<(Counted, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl GatewayListener {
    pub(crate) fn new(
        inner: TcpListener,
        max_connections: usize,
        tls: Option<TlsAcceptor>,
    ) -> io::Result<Self> {
        let local = inner.local_addr()?;
        let open = Arc::new(Semaphore::new(max_connections.max(1)));
        let (send, ready) = mpsc::channel(1);
        let acceptor = tokio::spawn(accept_loop(inner, open, tls, send));
        Ok(Self {
            ready,
            local,
            acceptor,
        })
    }
}

impl Drop for GatewayListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl std::fmt::Debug for GatewayListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn accept_loop(
    listener: TcpListener,
    open: Arc<Semaphore>,
    tls: Option<TlsAcceptor>,
    ready: mpsc::Sender<(Counted, SocketAddr)>,
) {
    loop {
        let Ok(permit) = open.clone().acquire_owned().await else {
            return;
        };
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, as axum's own loop does.
                tracing::warn!(error = %e, "could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match &tls {
            None => {
                let plain = Counted {
                    io: Connection::Plain(stream),
                    _permit: permit,
                };
                if ready.send((plain, addr)).await.is_err() {
                    return;
                }
            }
            Some(acceptor) => {
                let (acceptor, ready) = (acceptor.clone(), ready.clone());
                tokio::spawn(async move {
                    // A failed or stalled handshake only closes its own connection.
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        let secured = Counted {
                            io: Connection::Tls(Box::new(tls)),
                            _permit: permit,
                        };
                        let _ = ready.send((secured, addr)).await;
                    }
                });
            }
        }
    }
}

impl axum::serve::Listener for GatewayListener {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` resolves, then waits for the open
/// connections' requests to finish. Each connection's request head must arrive within
/// `header_read_timeout` (hyper's timer: a client that trickles its headers, or keeps an
/// idle connection without sending the next request, is cut off). `axum::serve` sets no
/// timer, so it cannot bound the head. HTTP/1.1 only: HTTP/2 would first wait, unbounded,
/// for the client's preface.
pub(crate) async fn serve(
    mut listener: GatewayListener,
    app: axum::Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use axum::serve::Listener as _;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection =
            graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(io), service));
        tokio::spawn(async move {
            // A client that went away, or whose head timed out: nothing to tell anyone.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A connection, in the clear or over TLS.
enum Connection {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection holding one of the cap's places until it closes.
pub(crate) struct Counted {
    io: Connection,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.io {
            Connection::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Connection::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Connection::Plain(s) => Pin::new(s).poll_flush(cx),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Connection::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS acceptor for a certificate chain and its private key, both PEM files.
pub(crate) fn tls_acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls_cert_file {}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_cert_file {}: no certificate in it",
            cert_file.display()
        ));
    }
    // The key file's name only: its content is a secret.
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("tls_key_file {}: {e}", key_file.display()))?;
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_cert_file and tls_key_file: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The error a body reports when it did not arrive in time (the body extractor's
/// rejection carries it; `routes` answers 408).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub(crate) struct BodyTimedOut(pub(crate) Duration);

/// Middleware: the request's body must arrive within `timeout` of the handler starting to
/// read it. Only the body: the wait for the broker's acknowledgement is not cut short (a
/// reading published but answered with a timeout would be sent again).
pub(crate) async fn body_deadline(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    next.run(request.map(|body| Body::new(Deadline::new(body, timeout))))
        .await
}

/// A body that fails with [`BodyTimedOut`] once its time is up.
struct Deadline {
    body: Body,
    timeout: Duration,
    /// Started at the first read, so a handler refused before reading costs nothing.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    fn new(body: Body, timeout: Duration) -> Self {
        Self {
            body,
            timeout,
            sleep: None,
        }
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let timeout = self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(timeout)))));
        }
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Whether a body rejection's cause is [`BodyTimedOut`].
pub(crate) fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        cause = e.source();
    }
    false
}
