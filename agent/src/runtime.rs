//! [`Runtime`]: what the agent needs of an async runtime, and nothing
//! more: readiness of a file descriptor (the UDP sockets, the control
//! socket and its connections), a timer, spawning a task and running
//! blocking work. quinn's `runtime` module is the model; `keynode-tokio`
//! and `keynode-smol` implement it, and everything else — the loop, the
//! control server — is written once over it.
//!
//! Readiness rather than whole sockets: the system calls (quinn-udp's
//! batched receive and send, `recv_from`, `accept`, `read`, `write`) are
//! made here on the std types, non-blocking; a runtime only says when to
//! try again. So both runtimes make exactly the same calls.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// What a file descriptor is waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    /// Something to read (or a connection to accept).
    Readable,
    /// Room to write.
    Writable,
}

/// What a runtime can watch: std's UDP socket, Unix listener and Unix
/// stream, non-blocking. Each owns its descriptor for its whole life and
/// always names the same one, so a reactor may keep the raw number (what
/// tokio's `AsyncFd::register` asks of its caller). Sealed: no other type
/// can promise it here.
pub trait Fd: sealed::Sealed + AsFd + AsRawFd + Send + Sync + 'static {}

impl Fd for std::net::UdpSocket {}
impl Fd for std::os::unix::net::UnixListener {}
impl Fd for std::os::unix::net::UnixStream {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for std::net::UdpSocket {}
    impl Sealed for std::os::unix::net::UnixListener {}
    impl Sealed for std::os::unix::net::UnixStream {}
}

/// An [`Fd`] registered with a runtime's reactor.
pub trait Registered<T>: Send + Sync + 'static {
    /// The std value, for calls that do not wait (options, addresses).
    fn get_ref(&self) -> &T;

    /// Waits until `T` may be ready for `interest`, then runs `io` on it;
    /// while `io` fails with `WouldBlock`, waits again. Any other result
    /// is returned.
    fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        interest: Interest,
        io: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>>;
}

/// A timer that can be moved to a new deadline (cheaper than a new one:
/// the loop moves it at every wake).
pub trait Timer: Send + Unpin + 'static {
    /// Fires at `at` instead.
    fn reset(&mut self, at: Instant);

    /// Ready once the deadline has passed.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// An async runtime, as the agent uses it.
pub trait Runtime: Send + Sync + 'static {
    /// A registered file descriptor.
    type Io<T: Fd>: Registered<T>;
    /// The runtime's timer.
    type Timer: Timer;

    /// Registers `fd` (non-blocking already) with the reactor. Called
    /// from within the runtime (a task or its blocking work).
    fn register<T: Fd>(fd: T) -> io::Result<Self::Io<T>>;

    /// A timer firing at `at`.
    fn timer(at: Instant) -> Self::Timer;

    /// Runs `future` as a task of its own, detached.
    fn spawn(future: impl Future<Output = ()> + Send + 'static);

    /// Runs `work` on a thread where blocking is fine (LMDB, the key file,
    /// the resolver), and its result. A panic in `work` goes on in the
    /// awaiting task.
    fn spawn_blocking<T: Send + 'static>(
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send;
}

/// Waits for `d`.
pub async fn sleep<R: Runtime>(d: Duration) {
    let mut timer = R::timer(Instant::now() + d);
    std::future::poll_fn(|cx| timer.poll(cx)).await;
}

/// `work`'s output, or `Err(Elapsed)` if `d` passes first (`work` is dropped).
pub async fn timeout<R: Runtime, T>(
    d: Duration,
    work: impl Future<Output = T>,
) -> Result<T, Elapsed> {
    let mut timer = R::timer(Instant::now() + d);
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        timer.poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

/// The time of a [`timeout`] passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed;

/// `poll_io`, as a future.
pub(crate) async fn io<T: Fd, R>(
    fd: &impl Registered<T>,
    interest: Interest,
    mut io: impl FnMut(&T) -> io::Result<R>,
) -> io::Result<R> {
    std::future::poll_fn(|cx| fd.poll_io(cx, interest, &mut io)).await
}
