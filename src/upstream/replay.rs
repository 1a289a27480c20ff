//! A request body that can be sent again: what an HTTP/2 backend refused unprocessed
//! (`REFUSED_STREAM`, or a stream above a `GOAWAY`'s last id) goes to another connection or
//! backend whatever its method, so the part of the body already handed to the refused stream
//! is kept (up to `KEEP`) for the next one, which reads it first and then the rest of the
//! client's body.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Body bytes kept for a resend. A gRPC call's message is usually well below this; a larger
/// body whose stream is refused after this much was sent cannot be resent (as Envoy, whose
/// retries buffer up to a limit too).
const KEEP: usize = 64 * 1024;

/// The client's body and what of it was read, shared by every attempt to send it.
#[derive(Debug, Clone)]
pub struct Tape(Arc<Mutex<Recorded>>);

#[derive(Debug)]
struct Recorded {
    source: Incoming,
    frames: Vec<Kept>,
    size: usize,
    /// More than `KEEP` was read: what was read is gone, no resend is possible.
    overflowed: bool,
    ended: bool,
    /// The client's body broke (a bad chunk, a reset): no backend is at fault.
    broken: bool,
    hint: SizeHint,
}

#[derive(Debug)]
enum Kept {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl Tape {
    /// The tape of `source`, and the body of the first attempt.
    pub fn new(source: Incoming) -> (Tape, Replay) {
        let hint = source.size_hint();
        let tape = Tape(Arc::new(Mutex::new(Recorded {
            source,
            frames: Vec::new(),
            size: 0,
            overflowed: false,
            ended: false,
            broken: false,
            hint,
        })));
        let first = Replay {
            tape: tape.clone(),
            at: 0,
            hint,
        };
        (tape, first)
    }

    /// Whether the client's body broke: an attempt that failed then is not the backend's
    /// fault.
    pub fn broken(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).broken
    }

    /// A body for one attempt: what was read so far, then the rest. `None` when what was read
    /// is no longer all kept.
    pub fn replay(&self) -> Option<Replay> {
        let r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (!r.overflowed).then(|| Replay {
            tape: self.clone(),
            at: 0,
            hint: r.hint,
        })
    }
}

/// One attempt's read of a `Tape`.
#[derive(Debug)]
pub struct Replay {
    tape: Tape,
    /// The next kept frame this attempt reads.
    at: usize,
    hint: SizeHint,
}

impl Body for Replay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let mut r = this.tape.0.lock().unwrap_or_else(|p| p.into_inner());
        if !r.overflowed
            && let Some(kept) = r.frames.get(this.at)
        {
            this.at += 1;
            return Poll::Ready(Some(Ok(match kept {
                Kept::Data(b) => Frame::data(b.clone()),
                Kept::Trailers(t) => Frame::trailers(t.clone()),
            })));
        }
        if r.ended {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut r.source).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => r.ended = true,
            Poll::Ready(Some(Err(_))) => r.broken = true,
            Poll::Ready(Some(Ok(frame))) if !r.overflowed => {
                let (len, kept) = match (frame.data_ref(), frame.trailers_ref()) {
                    (Some(d), _) => (d.len(), Some(Kept::Data(d.clone()))),
                    (None, Some(t)) => (0, Some(Kept::Trailers(t.clone()))),
                    (None, None) => (0, None),
                };
                if r.size + len > KEEP {
                    r.overflowed = true;
                    r.frames = Vec::new();
                } else if let Some(kept) = kept {
                    r.size += len;
                    r.frames.push(kept);
                    this.at = r.frames.len();
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let r = self.tape.0.lock().unwrap_or_else(|p| p.into_inner());
        (r.ended || r.source.is_end_stream()) && (r.overflowed || self.at >= r.frames.len())
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
