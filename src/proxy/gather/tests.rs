use super::*;

/// Records each write call it gets.
#[derive(Default)]
struct Recorder(Vec<(&'static str, Vec<u8>)>);

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.push(("write", buf.to_vec()));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let n = all.len();
        self.0.push(("writev", all));
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn gathered(parts: &[&[u8]]) -> Vec<(&'static str, Vec<u8>)> {
    let mut r = Recorder::default();
    let slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let n = match write_gathered(Pin::new(&mut r), &mut cx, &slices) {
        Poll::Ready(Ok(n)) => n,
        other => panic!("the recorder is always ready: {other:?}"),
    };
    assert_eq!(n, parts.iter().map(|p| p.len()).sum::<usize>());
    r.0
}

#[test]
fn small_pieces_go_out_as_one_plain_write() {
    assert_eq!(
        gathered(&[b"HTTP/1.1 200 OK\r\n\r\n", b"", b"body"]),
        [("write", b"HTTP/1.1 200 OK\r\n\r\nbody".to_vec())]
    );
}

#[test]
fn one_piece_is_written_as_it_is() {
    assert_eq!(gathered(&[b"", b"only"]), [("write", b"only".to_vec())]);
}

#[test]
fn large_pieces_stay_vectored() {
    let big = vec![7u8; GATHER_MAX];
    let calls = gathered(&[b"head", &big]);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "writev", "a large body is not copied");
}
