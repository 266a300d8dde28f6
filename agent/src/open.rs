//! [`Open`]: opening a stream, waiting while the peer's limit of open
//! streams is reached (the node's `StreamsAvailable` wakes it). Dropping it
//! leaves nothing behind in the readiness tables.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use keynode_core::ConnId;
use keynode_core::net::{OpenError, Protocol, StreamDir, StreamHandle};

use crate::now;
use crate::shared::Shared;

/// A stream being opened.
pub(crate) struct Open<'a> {
    shared: &'a Shared,
    conn: ConnId,
    protocol: &'a Protocol,
    dir: StreamDir,
    /// Set while it waits.
    token: Option<u64>,
}

impl<'a> Open<'a> {
    pub(crate) fn new(
        shared: &'a Shared,
        conn: ConnId,
        protocol: &'a Protocol,
        dir: StreamDir,
    ) -> Self {
        Self {
            shared,
            conn,
            protocol,
            dir,
            token: None,
        }
    }
}

impl Future for Open<'_> {
    type Output = Result<StreamHandle, OpenError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut state = this.shared.lock();
        match state
            .node
            .open_stream(now(), this.conn, this.protocol, this.dir)
        {
            Err(OpenError::StreamsExhausted { .. }) => {
                let token = match this.token {
                    Some(t) => t,
                    None => *this.token.insert(state.ready.open_token()),
                };
                state
                    .ready
                    .wait_open(this.conn, this.dir, token, cx.waker());
                Poll::Pending
            }
            result => {
                if let Some(token) = this.token.take() {
                    state.ready.forget_opener(this.conn, this.dir, token);
                }
                if result.is_ok() {
                    // The stream's header goes out with the loop's next drain.
                    state.wake_loop();
                }
                Poll::Ready(result)
            }
        }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.shared
                .lock()
                .ready
                .forget_opener(self.conn, self.dir, token);
        }
    }
}

/// Drops a datagram reader's empty queue when its read ends or is cancelled.
pub(crate) struct ForgetDatagramReader<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) conn: ConnId,
    pub(crate) protocol: &'a Protocol,
}

impl Drop for ForgetDatagramReader<'_> {
    fn drop(&mut self) {
        self.shared
            .lock()
            .ready
            .forget_datagram_reader(self.conn, self.protocol);
    }
}
