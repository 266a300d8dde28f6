//! [`Smol`]: smol as the agent's [`Runtime`]: readiness from async-io's
//! reactor (`Async`), its timer, tasks on the global executor and its
//! blocking pool.

use std::future::Future;
use std::io;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use keynode_agent::{Fd, Interest, Runtime};
use smol::{Async, Timer};

/// smol's global executor and reactor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Smol;

impl Runtime for Smol {
    type Io<T: Fd> = Async<T>;
    type Timer = Timer;

    fn register<T: Fd>(fd: T) -> io::Result<Async<T>> {
        Async::new(fd)
    }

    fn get_ref<T: Fd>(io: &Async<T>) -> &T {
        io.get_ref()
    }

    /// async-io forgets a readiness once it is reported: after `Ready`,
    /// the next poll waits for a new event.
    fn poll_try<T: Fd, R>(
        io: &Async<T>,
        cx: &mut Context<'_>,
        interest: Interest,
        attempt: impl FnOnce(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        ready!(match interest {
            Interest::Readable => io.poll_readable(cx),
            Interest::Writable => io.poll_writable(cx),
        })?;
        Poll::Ready(attempt(io.get_ref()))
    }

    fn timer(at: Instant) -> Timer {
        Timer::at(at)
    }

    fn reset(timer: &mut Timer, at: Instant) {
        timer.set_at(at);
    }

    fn poll_timer(timer: &mut Timer, cx: &mut Context<'_>) -> Poll<()> {
        std::pin::Pin::new(timer).poll(cx).map(|_| ())
    }

    fn spawn(future: impl Future<Output = ()> + Send + 'static) {
        smol::spawn(future).detach();
    }

    fn spawn_blocking<T: Send + 'static>(
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send {
        smol::unblock(work)
    }
}
