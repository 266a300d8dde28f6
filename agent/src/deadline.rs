//! [`Deadline`]: a stream that ends with `Err(Timeout)` when its time runs
//! out (`with_conn_g`'s timeout).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream};

use crate::AgentError;

/// `inner`'s items as `Ok`, until `sleep` completes: then one
/// `Err(Timeout)` and the end.
pub(crate) struct Deadline<S> {
    inner: Option<S>,
    sleep: Option<(Duration, BoxFuture<'static, ()>)>,
}

impl<S> Deadline<S> {
    pub(crate) fn new(inner: S, sleep: Option<(Duration, BoxFuture<'static, ()>)>) -> Self {
        Self {
            inner: Some(inner),
            sleep,
        }
    }
}

impl<S: Stream + Unpin> Stream for Deadline<S> {
    type Item = Result<S::Item, AgentError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(item) = Pin::new(inner).poll_next(cx) {
            if item.is_none() {
                // Dropping the inner stream releases its connection now.
                this.inner = None;
                this.sleep = None;
            }
            return Poll::Ready(item.map(Ok));
        }
        if let Some((limit, sleep)) = this.sleep.as_mut()
            && sleep.poll_unpin(cx).is_ready()
        {
            let limit = *limit;
            this.inner = None;
            this.sleep = None;
            return Poll::Ready(Some(Err(AgentError::Timeout(limit))));
        }
        Poll::Pending
    }
}
