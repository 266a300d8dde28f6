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
use std::task::{Context, Poll, ready};
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

/// An async runtime, as the agent uses it: associated functions only, so
/// that an implementation is a unit type naming its runtime's own types.
pub trait Runtime: Send + Sync + 'static {
    /// An [`Fd`] registered with the runtime's reactor.
    type Io<T: Fd>: Send + Sync + 'static;
    /// The runtime's timer, which can be moved to a new deadline (cheaper
    /// than a new one: the loop moves it at every wake).
    type Timer: Send + Unpin + 'static;

    /// Registers `fd` (non-blocking already) with the reactor. Called
    /// from within the runtime (a task or its blocking work).
    fn register<T: Fd>(fd: T) -> io::Result<Self::Io<T>>;

    /// The std value, for calls that do not wait (options, addresses).
    fn get_ref<T: Fd>(io: &Self::Io<T>) -> &T;

    /// Waits until `io` may be ready for `interest`, then runs `attempt`
    /// on it once. If that fails with `WouldBlock`, the readiness is
    /// forgotten (the next call waits for a new event) and the error is
    /// returned; [`poll_io`] tries until it is not.
    fn poll_try<T: Fd, R>(
        io: &Self::Io<T>,
        cx: &mut Context<'_>,
        interest: Interest,
        attempt: impl FnOnce(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>>;

    /// A timer firing at `at`.
    fn timer(at: Instant) -> Self::Timer;

    /// Moves `timer` to fire at `at` instead.
    fn reset(timer: &mut Self::Timer, at: Instant);

    /// Ready once `timer`'s deadline has passed.
    fn poll_timer(timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()>;

    /// Runs `future` as a task of its own, detached.
    fn spawn(future: impl Future<Output = ()> + Send + 'static);

    /// Runs `work` on a thread where blocking is fine (LMDB, the key file,
    /// the resolver), and its result. A panic in `work` goes on in the
    /// awaiting task.
    fn spawn_blocking<T: Send + 'static>(
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send;
}

/// Waits until `io` is ready for `interest` and runs `f` on it, again
/// after each `WouldBlock`; any other result is returned.
pub fn poll_io<R: Runtime, T: Fd, O>(
    io: &R::Io<T>,
    cx: &mut Context<'_>,
    interest: Interest,
    mut f: impl FnMut(&T) -> io::Result<O>,
) -> Poll<io::Result<O>> {
    loop {
        match ready!(R::poll_try(io, cx, interest, &mut f)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            result => return Poll::Ready(result),
        }
    }
}

/// Waits for `d`.
pub async fn sleep<R: Runtime>(d: Duration) {
    let mut timer = R::timer(Instant::now() + d);
    std::future::poll_fn(|cx| R::poll_timer(&mut timer, cx)).await;
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
        R::poll_timer(&mut timer, cx).map(|()| Err(Elapsed))
    })
    .await
}

/// The time of a [`timeout`] passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed;

/// [`poll_io`], as a future.
pub(crate) async fn io<R: Runtime, T: Fd, O>(
    io: &R::Io<T>,
    interest: Interest,
    mut f: impl FnMut(&T) -> io::Result<O>,
) -> io::Result<O> {
    std::future::poll_fn(|cx| poll_io::<R, T, O>(io, cx, interest, &mut f)).await
}
