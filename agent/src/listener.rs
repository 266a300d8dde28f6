//! [`Listener`]: the inbound streams of one protocol, from
//! [`crate::Agent::accept`]. While it lives the protocol is registered on
//! the node (only registered protocols are accepted); dropping it
//! deregisters the protocol, and streams not yet taken are refused.

use std::pin::Pin;
use std::task::{Context, Poll};

use keynode_core::net::{Protocol, StreamDir};
use keynode_core::{ConnId, NodeId};

use crate::readiness::{Pending, refuse};
use crate::shared::Shared;
use crate::stream::{RecvStream, SendStream};

/// A stream a peer opened.
///
/// [`Listener::accept`] hands it out; take its halves out to serve it.
///
/// ```no_run
/// # async fn f(mut listener: keynode_agent::Listener) -> Result<(), keynode_agent::AgentError> {
/// let incoming = listener.accept().await;
/// println!("{} opened a stream of {}", incoming.peer, incoming.protocol);
/// let Some(mut send) = incoming.send else {
///     return Ok(()); // unidirectional: nothing to answer on
/// };
/// send.write_all(b"ok").await?;
/// # Ok(())
/// # }
/// ```
pub struct IncomingStream {
    /// Who opened it (proven by the connection's handshake).
    pub peer: NodeId,
    /// The connection it came on.
    pub conn: ConnId,
    /// Its protocol.
    pub protocol: Protocol,
    /// The sending side: `None` for a unidirectional stream.
    pub send: Option<SendStream>,
    /// The receiving side.
    pub recv: RecvStream,
}

/// The inbound streams of a protocol; a `futures::Stream` of
/// [`IncomingStream`]s that never ends while the agent runs.
///
/// ```no_run
/// # async fn f(listener: keynode_agent::Listener) {
/// use futures::StreamExt;
///
/// // Up to 16 streams served at once, each read to its end.
/// listener
///     .for_each_concurrent(16, |mut incoming| async move {
///         let _ = incoming.recv.read_to_end(64 * 1024).await;
///     })
///     .await;
/// # }
/// ```
pub struct Listener {
    shared: Shared,
    protocol: Protocol,
}

impl Listener {
    pub(crate) fn new(shared: Shared, protocol: Protocol) -> Self {
        Self { shared, protocol }
    }

    /// The protocol.
    ///
    /// ```no_run
    /// # fn f(agent: keynode_agent::Agent) -> Result<(), Box<dyn std::error::Error>> {
    /// use keynode_agent::{Protocol, ProtocolOptions};
    ///
    /// let protocol = Protocol::try_from("myapp/echo/1")?;
    /// let listener = agent.accept(protocol.clone(), ProtocolOptions::default())?;
    /// assert_eq!(listener.protocol(), &protocol);
    /// # Ok(())
    /// # }
    /// ```
    pub fn protocol(&self) -> &Protocol {
        &self.protocol
    }

    /// The next inbound stream, or waits for one.
    ///
    /// ```no_run
    /// # async fn f(mut listener: keynode_agent::Listener) {
    /// // What `accept` does: poll until a peer opens a stream.
    /// let incoming = std::future::poll_fn(|cx| listener.poll_accept(cx)).await;
    /// println!("{} opened a stream", incoming.peer);
    /// # }
    /// ```
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<IncomingStream> {
        let pending = {
            let mut state = self.shared.lock();
            let Some(l) = state.ready.listeners.get_mut(&self.protocol) else {
                return Poll::Pending;
            };
            match l.pending.pop_front() {
                Some(p) => p,
                None => {
                    l.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        };
        Poll::Ready(self.incoming(pending))
    }

    /// The next inbound stream.
    ///
    /// ```no_run
    /// # async fn f(mut listener: keynode_agent::Listener) -> Result<(), keynode_agent::AgentError> {
    /// let mut incoming = listener.accept().await;
    /// let request = incoming.recv.read_chunk(1024).await?;
    /// if let (Some(send), Some(request)) = (incoming.send.as_mut(), request) {
    ///     send.write_all(&request).await?; // an echo
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn accept(&mut self) -> IncomingStream {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    fn incoming(&self, p: Pending) -> IncomingStream {
        let send = (p.stream.dir() == StreamDir::Bi)
            .then(|| SendStream::new(self.shared.clone(), p.stream, p.peer));
        IncomingStream {
            peer: p.peer,
            conn: p.stream.conn(),
            protocol: self.protocol.clone(),
            send,
            recv: RecvStream::new(self.shared.clone(), p.stream, p.peer),
        }
    }
}

impl futures::Stream for Listener {
    type Item = IncomingStream;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<IncomingStream>> {
        self.get_mut().poll_accept(cx).map(Some)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.node.deregister_protocol(&self.protocol);
        if let Some(l) = state.ready.listeners.remove(&self.protocol) {
            // No handle was made for these yet: refusing them takes no lock.
            for p in l.pending {
                refuse(&mut state.node, p.stream);
            }
        }
        state.wake_loop();
    }
}
