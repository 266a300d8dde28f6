//! [`Tokio`]: tokio as the agent's [`Runtime`]: readiness from its reactor
//! (`AsyncFd`), its timer, its tasks and its blocking pool.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use keynode_agent::{Fd, Interest, Registered, Runtime};
use tokio::io::unix::AsyncFd;

/// tokio, either flavour; the agent's calls must come from within it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    type Io<T: Fd> = Io<T>;
    type Timer = Timer;

    fn register<T: Fd>(fd: T) -> io::Result<Io<T>> {
        // SAFETY: an `Fd` owns its descriptor until it is dropped, which
        // the `AsyncFd` does, and always returns the same one (the trait
        // is sealed to std's sockets, which do).
        unsafe { AsyncFd::register(fd) }
            .map(Io)
            .map_err(io::Error::from)
    }

    fn timer(at: Instant) -> Timer {
        Timer(Box::pin(tokio::time::sleep_until(at.into())))
    }

    fn spawn(future: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(future);
    }

    fn spawn_blocking<T: Send + 'static>(
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send {
        let task = tokio::task::spawn_blocking(work);
        async move {
            match task.await {
                Ok(out) => out,
                Err(e) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    // Cancelled: the runtime is shutting down, and drops
                    // the awaiting task too.
                    Err(_) => std::future::pending().await,
                },
            }
        }
    }
}

/// A file descriptor on tokio's reactor.
pub struct Io<T: Fd>(AsyncFd<T>);

impl<T: Fd> Registered<T> for Io<T> {
    fn get_ref(&self) -> &T {
        self.0.get_ref()
    }

    fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        interest: Interest,
        mut io: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            let mut ready = ready!(match interest {
                Interest::Readable => self.0.poll_read_ready(cx),
                Interest::Writable => self.0.poll_write_ready(cx),
            })?;
            // `WouldBlock` clears the readiness: the next poll waits.
            if let Ok(result) = ready.try_io(|fd| io(fd.get_ref())) {
                return Poll::Ready(result);
            }
        }
    }
}

/// tokio's sleep, movable.
pub struct Timer(Pin<Box<tokio::time::Sleep>>);

impl keynode_agent::Timer for Timer {
    fn reset(&mut self, at: Instant) {
        self.0.as_mut().reset(at.into());
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}
