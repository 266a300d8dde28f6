//! [`Smol`]: smol as the agent's [`Runtime`]: readiness from async-io's
//! reactor (`Async`), its timer, tasks on the global executor and its
//! blocking pool.

use std::future::Future;
use std::io;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use keynode_agent::{Fd, Interest, Registered, Runtime};
use smol::Async;

/// smol's global executor and reactor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Smol;

impl Runtime for Smol {
    type Io<T: Fd> = Io<T>;
    type Timer = Timer;

    fn register<T: Fd>(fd: T) -> io::Result<Io<T>> {
        Async::new(fd).map(Io)
    }

    fn timer(at: Instant) -> Timer {
        Timer(smol::Timer::at(at))
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

/// A file descriptor on async-io's reactor.
pub struct Io<T: Fd>(Async<T>);

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
            // Ready: an event came since this task last got `Pending`.
            ready!(match interest {
                Interest::Readable => self.0.poll_readable(cx),
                Interest::Writable => self.0.poll_writable(cx),
            })?;
            match io(self.0.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

/// smol's timer.
pub struct Timer(smol::Timer);

impl keynode_agent::Timer for Timer {
    fn reset(&mut self, at: Instant) {
        self.0.set_at(at);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}
