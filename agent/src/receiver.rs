//! The receiving task: the QUIC socket's receive system calls, on a task
//! of their own, into buffers the loop gives back.

use std::sync::Arc;

use futures::channel::{mpsc, oneshot};
use futures::future::{AbortHandle, Abortable};
use futures::{SinkExt, StreamExt};

use crate::runtime::{Interest, Runtime, io, sleep};
use crate::udp::{RecvBuffers, UdpIo};

/// Receive buffers in flight between the receiving task and the loop:
/// while the loop decodes one, the task fills the next.
pub(crate) const RECV_BUFFERS: usize = 4;

/// The QUIC socket and its batched I/O.
pub(crate) struct Quic<R: Runtime> {
    pub(crate) socket: Arc<R::Io<std::net::UdpSocket>>,
    pub(crate) udp: Arc<UdpIo>,
}

impl<R: Runtime> Clone for Quic<R> {
    fn clone(&self) -> Self {
        Self {
            socket: self.socket.clone(),
            udp: self.udp.clone(),
        }
    }
}

/// The receiving task, aborted when the loop ends however it ends (it
/// holds the socket).
pub(crate) struct Receiving {
    abort: AbortHandle,
    ended: oneshot::Receiver<()>,
}

impl Receiving {
    /// Starts the task: it fills the buffers of `empty` and hands each
    /// filled one to `full`.
    pub(crate) fn spawn<R: Runtime>(
        quic: Quic<R>,
        empty: mpsc::Receiver<RecvBuffers>,
        full: mpsc::Sender<RecvBuffers>,
    ) -> Self {
        let (abort, registration) = AbortHandle::new_pair();
        let (done, ended) = oneshot::channel();
        R::spawn(async move {
            // The receiver (and its socket) is dropped with this statement.
            let _ = Abortable::new(receiver(quic, empty, full), registration).await;
            let _ = done.send(());
        });
        Self { abort, ended }
    }

    /// Ends the task, once it has let go of the socket.
    pub(crate) async fn stop(mut self) {
        self.abort.abort();
        let _ = (&mut self.ended).await;
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

/// Receives on the QUIC socket into the buffers the loop gives back
/// (`empty`) and hands each filled one to the loop (`full`), as quinn's
/// endpoint task feeds its connections: the receive system calls run on
/// the other core while the loop decodes and answers. On two free cores
/// this carried one stream from 798-849 to 862-932 MiB/s (BENCHMARKS.md).
/// At most [`RECV_BUFFERS`] are filled ahead: beyond them datagrams wait
/// in the socket, and the loop is never handed more than it gives back.
async fn receiver<R: Runtime>(
    quic: Quic<R>,
    mut empty: mpsc::Receiver<RecvBuffers>,
    mut full: mpsc::Sender<RecvBuffers>,
) {
    while let Some(mut buffers) = empty.next().await {
        loop {
            match io::<R, _, _>(&quic.socket, Interest::Readable, |s| {
                quic.udp.recv(s, &mut buffers)
            })
            .await
            {
                Ok(_) => break,
                // An error the socket reported (an ICMP error): the next
                // receive goes on, after a pause, so that an error that
                // lasts cannot spin a core.
                Err(e) => {
                    tracing::trace!("receive failed: {e}");
                    sleep::<R>(std::time::Duration::from_millis(1)).await;
                }
            }
        }
        if full.send(buffers).await.is_err() {
            return;
        }
    }
}
