//! [`Tokio`]: tokio as the agent's [`Runtime`]: readiness from its reactor
//! (`AsyncFd`), its timer, its tasks and its blocking pool.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use keynode_agent::{Fd, Interest, Runtime};
use tokio::io::unix::AsyncFd;
use tokio::time::Sleep;

/// tokio, either flavour; the agent's calls must come from within it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    type Io<T: Fd> = AsyncFd<T>;
    type Timer = Pin<Box<Sleep>>;

    fn register<T: Fd>(fd: T) -> io::Result<AsyncFd<T>> {
        // SAFETY: an `Fd` owns its descriptor until it is dropped, which
        // the `AsyncFd` does, and always returns the same one (the trait
        // is sealed to std's sockets, which do).
        unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
    }

    fn get_ref<T: Fd>(io: &AsyncFd<T>) -> &T {
        io.get_ref()
    }

    fn poll_try<T: Fd, R>(
        io: &AsyncFd<T>,
        cx: &mut Context<'_>,
        interest: Interest,
        attempt: impl FnOnce(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        let mut guard = ready!(match interest {
            Interest::Readable => io.poll_read_ready(cx),
            Interest::Writable => io.poll_write_ready(cx),
        })?;
        // `try_io` clears the readiness on `WouldBlock` (and only then).
        Poll::Ready(
            guard
                .try_io(|fd| attempt(fd.get_ref()))
                .unwrap_or_else(|_| Err(io::ErrorKind::WouldBlock.into())),
        )
    }

    fn timer(at: Instant) -> Self::Timer {
        Box::pin(tokio::time::sleep_until(at.into()))
    }

    fn reset(timer: &mut Self::Timer, at: Instant) {
        timer.as_mut().reset(at.into());
    }

    fn poll_timer(timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()> {
        timer.as_mut().poll(cx)
    }

    fn spawn(future: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(future);
    }

    fn spawn_blocking<T: Send + 'static>(
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send {
        let task = tokio::task::spawn_blocking(work);
        async move {
            match task.await.map_err(|e| e.try_into_panic()) {
                Ok(out) => out,
                Err(Ok(panic)) => std::panic::resume_unwind(panic),
                // Cancelled: the runtime is shutting down, and drops the
                // awaiting task too.
                Err(Err(_)) => std::future::pending().await,
            }
        }
    }
}
