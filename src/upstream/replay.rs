//! A request body that can be sent again: what an HTTP/2 backend refused unprocessed
//! (`REFUSED_STREAM`, or a stream above a `GOAWAY`'s last id) goes to another connection or
//! backend whatever its method, so the part of the body already handed to the refused stream
//! is kept (up to `KEEP` bytes, copied, so no read buffer of the client's is pinned) for the
//! next attempt, which reads it first and then the rest of the client's body.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Body bytes kept for a resend. A gRPC call's message is usually well below this; a larger
/// body whose stream is refused after this much was sent cannot be resent (as with Envoy,
/// whose retries buffer up to a limit too).
const KEEP: usize = 64 * 1024;

/// The client's body and what of it was read, shared by every attempt to send it.
#[derive(Debug, Clone)]
pub struct Tape(Arc<Mutex<Recorded>>);

#[derive(Debug)]
struct Recorded {
    source: Incoming,
    /// The data read so far, while it is all kept.
    data: BytesMut,
    trailers: Option<HeaderMap>,
    /// No resend is possible any more: more than `KEEP` was read, or an answer came.
    sealed: bool,
    ended: bool,
    /// The client's body broke (a bad chunk, a reset): no backend is at fault.
    broken: bool,
    hint: SizeHint,
}

/// Why a kept body cannot go on: the client's body broke earlier.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body broke off")]
pub struct Broken;

impl Tape {
    /// The tape of `source`, and the body of the first attempt.
    pub fn new(source: Incoming) -> (Tape, Replay) {
        let hint = source.size_hint();
        let tape = Tape(Arc::new(Mutex::new(Recorded {
            source,
            data: BytesMut::new(),
            trailers: None,
            sealed: false,
            ended: false,
            broken: false,
            hint,
        })));
        let first = Replay {
            tape: tape.clone(),
            at: 0,
            trailers_read: false,
            hint,
        };
        (tape, first)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the client's body broke: an attempt that failed then is not the backend's
    /// fault.
    pub fn broken(&self) -> bool {
        self.lock().broken
    }

    /// An answer came: nothing will be sent again, so nothing more is kept.
    pub fn seal(&self) {
        let mut r = self.lock();
        r.sealed = true;
        r.data = BytesMut::new();
    }

    /// A body for another attempt: what was read so far, then the rest. `None` when what was
    /// read is no longer all kept.
    pub fn replay(&self) -> Option<Replay> {
        let r = self.lock();
        (!r.sealed).then(|| Replay {
            tape: self.clone(),
            at: 0,
            trailers_read: false,
            hint: r.hint,
        })
    }
}

/// One attempt's read of a `Tape`.
#[derive(Debug)]
pub struct Replay {
    tape: Tape,
    /// The bytes of the kept data this attempt has read.
    at: usize,
    trailers_read: bool,
    hint: SizeHint,
}

impl Body for Replay {
    type Data = Bytes;
    type Error = Broken;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Broken>>> {
        let this = self.get_mut();
        let mut r = this.tape.lock();
        if r.broken {
            return Poll::Ready(Some(Err(Broken)));
        }
        if !r.sealed {
            // A resend: the kept data as one frame, then the kept trailers.
            if let Some(rest) = r.data.get(this.at..).filter(|rest| !rest.is_empty()) {
                let frame = Frame::data(Bytes::copy_from_slice(rest));
                this.at = r.data.len();
                return Poll::Ready(Some(Ok(frame)));
            }
            if let Some(t) = r.trailers.as_ref().filter(|_| !this.trailers_read) {
                this.trailers_read = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
            }
        }
        if r.ended {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut r.source).poll_frame(cx);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                r.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(_))) => {
                r.broken = true;
                Poll::Ready(Some(Err(Broken)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if !r.sealed {
                    if let Some(d) = frame.data_ref() {
                        if r.data.len() + d.len() > KEEP {
                            r.sealed = true;
                            r.data = BytesMut::new();
                        } else {
                            r.data.extend_from_slice(d);
                            this.at = r.data.len();
                        }
                    } else if let Some(t) = frame.trailers_ref() {
                        r.trailers = Some(t.clone());
                        this.trailers_read = true;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let r = self.tape.lock();
        let kept_read =
            r.sealed || (self.at >= r.data.len() && (self.trailers_read || r.trailers.is_none()));
        kept_read && (r.ended || r.source.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
