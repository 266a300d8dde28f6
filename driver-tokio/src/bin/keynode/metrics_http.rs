//! `keynode agent start --metrics-addr ADDR`: the agent's metrics over
//! HTTP, `GET /metrics` in the Prometheus text exposition format, for a
//! Prometheus server to scrape. Off unless asked.
//!
//! One request per connection (`Connection: close`), parsed by `httparse`.
//! Bounded for a listener that may be reachable by anyone: at most
//! [`MAX_SCRAPES`] connections are served at once (the rest wait in the
//! listen backlog), each has [`REQUEST_TIMEOUT`] to send a request head of
//! at most [`MAX_HEAD`] bytes, and only `GET` and `HEAD` of `/metrics` are
//! answered with the metrics (other paths 404, other methods 405).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keynode_agent::{Agent, METRICS_CONTENT_TYPE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Connections served at once.
pub const MAX_SCRAPES: usize = 8;
/// How long a client has, from its connection being taken, to send its
/// request head and take the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head read (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// The most headers a request may have.
const MAX_HEADERS: usize = 32;

/// The metrics endpoint: it serves until dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` (an error names it) and serves `agent`'s metrics there.
    pub async fn bind(addr: SocketAddr, agent: Agent) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("metrics address {addr}: {e}")))?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(serve(listener, agent));
        Ok(Self { addr, task })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, agent: Agent) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    // The connections' tasks are owned here, so that aborting `serve` (the
    // server dropped, the agent stopping) aborts them too.
    let mut answering = tokio::task::JoinSet::new();
    loop {
        // Reap the finished ones: at most MAX_SCRAPES are ever held.
        while answering.try_join_next().is_some() {}
        // Taken before the accept, so that connections beyond the bound
        // wait in the kernel's backlog rather than in our memory.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: back off rather than spin.
                tracing::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let agent = agent.clone();
        answering.spawn(async move {
            if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &agent)).await {
                tracing::debug!("metrics endpoint: client too slow: {e}");
            }
            drop(slot);
        });
    }
}

/// What a request asked for.
enum Asked {
    Metrics { head_only: bool },
    NotFound { head_only: bool },
    WrongMethod,
    Bad,
    HeadTooLarge,
}

async fn answer(mut stream: TcpStream, agent: &Agent) -> io::Result<()> {
    let Some(asked) = read_request(&mut stream).await? else {
        return Ok(());
    };
    let (status, extra, body, head_only) = match asked {
        Asked::Metrics { head_only } => (
            "200 OK",
            format!("Content-Type: {METRICS_CONTENT_TYPE}\r\n"),
            agent.metrics_text(),
            head_only,
        ),
        Asked::NotFound { head_only } => (
            "404 Not Found",
            String::new(),
            "not found: try /metrics\n".into(),
            head_only,
        ),
        Asked::WrongMethod => (
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n".into(),
            "only GET and HEAD\n".into(),
            false,
        ),
        Asked::Bad => (
            "400 Bad Request",
            String::new(),
            "bad request\n".into(),
            false,
        ),
        Asked::HeadTooLarge => (
            "431 Request Header Fields Too Large",
            String::new(),
            "request head too large\n".into(),
            false,
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

/// Reads one request head; `None` when the client closed before sending one.
async fn read_request(stream: &mut TcpStream) -> io::Result<Option<Asked>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let path = request.path.unwrap_or("");
                // A query string (`?name[]=...`, as Prometheus may add) is ignored.
                let path = path.split_once('?').map_or(path, |(p, _)| p);
                return Ok(Some(match (request.method.unwrap_or(""), path) {
                    ("GET", "/metrics") => Asked::Metrics { head_only: false },
                    ("HEAD", "/metrics") => Asked::Metrics { head_only: true },
                    ("GET", _) => Asked::NotFound { head_only: false },
                    ("HEAD", _) => Asked::NotFound { head_only: true },
                    _ => Asked::WrongMethod,
                }));
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                return Ok(Some(Asked::HeadTooLarge));
            }
            Err(_) => return Ok(Some(Asked::Bad)),
        }
    }
}
