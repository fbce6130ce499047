//! STOMP 1.2 frames and their wire form, as a `tokio-util` codec.
//!
//! A frame is a command line, header lines (`name:value`, escaped as the specification says: `\\`,
//! `\n`, `\r` and `\c` for a colon; not in `CONNECT`/`CONNECTED` frames), an empty line, a body and a
//! NUL byte. With a `content-length` header the body is exactly that many bytes and may contain NULs;
//! without it the body ends at the first NUL. End-of-lines between frames are heart-beats. Lines may
//! end with `\r\n`. When a header repeats, the first occurrence counts.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// One STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    pub fn new(command: &str) -> Self {
        Self {
            command: command.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body and its `content-length` (so it may hold NUL bytes, and ActiveMQ keeps it as bytes).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        self.headers.retain(|(k, _)| k != "content-length");
        self.headers
            .push(("content-length".to_owned(), body.len().to_string()));
        self.body = body;
        self
    }

    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What travels on a STOMP connection: a frame or a heart-beat (an end-of-line between frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Frame(Frame),
    HeartBeat,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("connection i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed STOMP frame: {0}")]
    Malformed(String),
    #[error("STOMP frame larger than {0} bytes")]
    TooLarge(usize),
}

/// A frame whose command and headers are read, waiting for its body.
#[derive(Debug)]
struct Pending {
    command: String,
    headers: Vec<(String, String)>,
    body_start: usize,
    content_length: Option<usize>,
    /// How far the body was searched for its NUL (frames without `content-length`).
    scanned: usize,
}

/// The STOMP 1.2 codec. Frames (headers plus body) above `max_frame` bytes are refused.
#[derive(Debug)]
pub struct StompCodec {
    max_frame: usize,
    pending: Option<Pending>,
}

impl StompCodec {
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            pending: None,
        }
    }
}

/// Frames whose headers are not escaped (STOMP 1.2: only `CONNECT` and `CONNECTED`).
fn raw_headers(command: &str) -> bool {
    matches!(command, "CONNECT" | "CONNECTED" | "STOMP")
}

pub fn escape(raw: &str, out: &mut BytesMut) {
    for b in raw.bytes() {
        match b {
            b'\\' => out.put_slice(b"\\\\"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            b':' => out.put_slice(b"\\c"),
            _ => out.put_u8(b),
        }
    }
}

pub fn unescape(raw: &[u8]) -> Result<String, CodecError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b'c') => out.push(b':'),
            Some(other) => {
                return Err(CodecError::Malformed(format!(
                    "undefined escape \\{} in a header",
                    char::from(*other)
                )));
            }
            None => {
                return Err(CodecError::Malformed(
                    "a header ends in a lone backslash".into(),
                ));
            }
        }
    }
    String::from_utf8(out).map_err(|_| CodecError::Malformed("a header is not UTF-8".into()))
}

fn text(raw: &[u8]) -> Result<String, CodecError> {
    String::from_utf8(raw.to_vec())
        .map_err(|_| CodecError::Malformed("a header is not UTF-8".into()))
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl StompCodec {
    /// Reads the command and headers if the whole header block is there.
    fn head(&self, src: &BytesMut) -> Result<Option<Pending>, CodecError> {
        let mut start = 0;
        let mut command: Option<String> = None;
        let mut headers = Vec::new();
        loop {
            let Some(nl) = src[start..].iter().position(|b| *b == b'\n') else {
                if src.len() > self.max_frame {
                    return Err(CodecError::TooLarge(self.max_frame));
                }
                return Ok(None);
            };
            let line = trim_cr(&src[start..start + nl]);
            let next = start + nl + 1;
            match &command {
                None => {
                    if line.is_empty() {
                        return Err(CodecError::Malformed("empty command".into()));
                    }
                    command = Some(text(line)?);
                }
                Some(cmd) => {
                    if line.is_empty() {
                        let content_length = headers
                            .iter()
                            .find(|(k, _): &&(String, String)| k == "content-length")
                            .map(|(_, v)| {
                                v.trim().parse::<usize>().map_err(|_| {
                                    CodecError::Malformed(format!("content-length {v:?}"))
                                })
                            })
                            .transpose()?;
                        if let Some(n) = content_length
                            && next.saturating_add(n) > self.max_frame
                        {
                            return Err(CodecError::TooLarge(self.max_frame));
                        }
                        return Ok(Some(Pending {
                            command: cmd.clone(),
                            headers,
                            body_start: next,
                            content_length,
                            scanned: 0,
                        }));
                    }
                    let colon = line.iter().position(|b| *b == b':').ok_or_else(|| {
                        CodecError::Malformed(format!(
                            "header line without a colon: {:?}",
                            String::from_utf8_lossy(line)
                        ))
                    })?;
                    let (name, value) = (&line[..colon], &line[colon + 1..]);
                    if raw_headers(cmd) {
                        headers.push((text(name)?, text(value)?));
                    } else {
                        headers.push((unescape(name)?, unescape(value)?));
                    }
                }
            }
            start = next;
        }
    }
}

impl Decoder for StompCodec {
    type Item = Item;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Item>, CodecError> {
        if self.pending.is_none() {
            // End-of-lines before a frame are heart-beats.
            let mut beats = false;
            loop {
                if src.first() == Some(&b'\n') {
                    src.advance(1);
                    beats = true;
                } else if src.starts_with(b"\r\n") {
                    src.advance(2);
                    beats = true;
                } else {
                    break;
                }
            }
            if beats {
                return Ok(Some(Item::HeartBeat));
            }
            if src.is_empty() || src[..] == b"\r"[..] {
                return Ok(None);
            }
            match self.head(src)? {
                Some(p) => self.pending = Some(p),
                None => return Ok(None),
            }
        }
        let Some(p) = self.pending.as_mut() else {
            return Ok(None);
        };
        let body_len = match p.content_length {
            Some(n) => {
                if src.len() < p.body_start + n + 1 {
                    src.reserve(p.body_start + n + 1 - src.len());
                    return Ok(None);
                }
                if src[p.body_start + n] != 0 {
                    return Err(CodecError::Malformed(format!(
                        "{} frame: no NUL after its content-length of {n}",
                        p.command
                    )));
                }
                n
            }
            None => {
                let from = p.body_start + p.scanned;
                match src[from..].iter().position(|b| *b == 0) {
                    Some(at) => p.scanned + at,
                    None => {
                        p.scanned = src.len() - p.body_start;
                        if src.len() > self.max_frame {
                            return Err(CodecError::TooLarge(self.max_frame));
                        }
                        return Ok(None);
                    }
                }
            }
        };
        let Some(p) = self.pending.take() else {
            return Ok(None);
        };
        let mut frame = src.split_to(p.body_start + body_len + 1);
        frame.advance(p.body_start);
        frame.truncate(body_len);
        Ok(Some(Item::Frame(Frame {
            command: p.command,
            headers: p.headers,
            body: frame.freeze(),
        })))
    }
}

impl Encoder<Item> for StompCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Item, dst: &mut BytesMut) -> Result<(), CodecError> {
        let frame = match item {
            Item::HeartBeat => {
                dst.put_u8(b'\n');
                return Ok(());
            }
            Item::Frame(frame) => frame,
        };
        let raw = raw_headers(&frame.command);
        dst.reserve(frame.command.len() + 64 * frame.headers.len() + frame.body.len() + 32);
        dst.put_slice(frame.command.as_bytes());
        dst.put_u8(b'\n');
        let mut has_length = false;
        for (name, value) in &frame.headers {
            has_length |= name == "content-length";
            if raw {
                if name.contains(['\n', '\r', ':']) || value.contains(['\n', '\r']) {
                    return Err(CodecError::Malformed(format!(
                        "{} header {name:?} cannot be sent unescaped",
                        frame.command
                    )));
                }
                dst.put_slice(name.as_bytes());
                dst.put_u8(b':');
                dst.put_slice(value.as_bytes());
            } else {
                escape(name, dst);
                dst.put_u8(b':');
                escape(value, dst);
            }
            dst.put_u8(b'\n');
        }
        if !has_length && !frame.body.is_empty() {
            dst.put_slice(format!("content-length:{}\n", frame.body.len()).as_bytes());
        }
        dst.put_u8(b'\n');
        dst.put_slice(&frame.body);
        dst.put_u8(0);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn encode(frame: Frame) -> BytesMut {
        let mut out = BytesMut::new();
        StompCodec::new(1 << 20)
            .encode(Item::Frame(frame), &mut out)
            .unwrap();
        out
    }

    fn decode_all(codec: &mut StompCodec, buf: &mut BytesMut) -> Vec<Item> {
        let mut out = Vec::new();
        while let Some(item) = codec.decode(buf).unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn encodes_a_frame_with_escaped_headers_and_a_length() {
        let frame = Frame::new("SEND")
            .header("destination", "/queue/a")
            .header("partition", "store:berlin-1\nline\\x\r")
            .body(Bytes::from_static(b"hi"));
        assert_eq!(
            &encode(frame)[..],
            &b"SEND\ndestination:/queue/a\npartition:store\\cberlin-1\\nline\\\\x\\r\ncontent-length:2\n\nhi\0"[..]
        );
    }

    #[test]
    fn connect_headers_are_not_escaped() {
        let frame = Frame::new("CONNECT")
            .header("accept-version", "1.2")
            .header("host", "a:b");
        assert_eq!(
            &encode(frame)[..],
            &b"CONNECT\naccept-version:1.2\nhost:a:b\n\n\0"[..]
        );
        let mut codec = StompCodec::new(1024);
        let mut buf = BytesMut::from(&b"CONNECTED\nsession:ID:x\\y\nversion:1.2\n\n\0"[..]);
        let got = decode_all(&mut codec, &mut buf);
        let Item::Frame(f) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(f.get("session"), Some("ID:x\\y"));
    }

    #[test]
    fn round_trips_headers_and_binary_bodies_with_nuls() {
        let body = Bytes::from_static(&[0, 1, 0, 255, b'\n', 0]);
        let frame = Frame::new("MESSAGE")
            .header("ack", "ID:vm-1:2\\3")
            .header("reason", "line one\nline two: more\r")
            .body(body.clone());
        let mut buf = encode(frame.clone());
        let mut codec = StompCodec::new(1024);
        assert_eq!(decode_all(&mut codec, &mut buf), vec![Item::Frame(frame)]);
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_bodies_with_and_without_a_length() {
        let mut codec = StompCodec::new(1024);
        let mut buf =
            BytesMut::from(&b"RECEIPT\nreceipt-id:7\n\n\0MESSAGE\ncontent-length:0\n\n\0"[..]);
        let got = decode_all(&mut codec, &mut buf);
        assert_eq!(got.len(), 2);
        let (Item::Frame(a), Item::Frame(b)) = (&got[0], &got[1]) else {
            panic!("{got:?}")
        };
        assert_eq!(
            (a.command.as_str(), a.get("receipt-id")),
            ("RECEIPT", Some("7"))
        );
        assert!(a.body.is_empty() && b.body.is_empty());
        assert_eq!(b.command, "MESSAGE");
    }

    #[test]
    fn end_of_lines_between_frames_are_heart_beats() {
        let mut codec = StompCodec::new(1024);
        let mut buf = BytesMut::from(&b"\n\r\n\nRECEIPT\r\nreceipt-id:1\r\n\r\n\0\n\n"[..]);
        let got = decode_all(&mut codec, &mut buf);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], Item::HeartBeat);
        let Item::Frame(f) = &got[1] else {
            panic!("{got:?}")
        };
        assert_eq!(f.get("receipt-id"), Some("1"), "CRLF lines are read");
        assert_eq!(got[2], Item::HeartBeat);
        assert!(buf.is_empty());
        // A lone CR may be the start of a CRLF heart-beat: wait for more.
        let mut buf = BytesMut::from(&b"\r"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.put_slice(b"\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Item::HeartBeat));
    }

    #[test]
    fn partial_frames_wait_for_the_rest_byte_by_byte() {
        let body = Bytes::from_static(b"a\0b\0c");
        let frames = [
            Frame::new("MESSAGE")
                .header("subscription", "0")
                .header("x", "a:b")
                .body(body),
            Frame::new("ERROR").header("message", "no length"),
        ];
        let mut wire = BytesMut::new();
        for f in &frames {
            wire.extend_from_slice(&encode(f.clone()));
        }
        // The second frame without content-length: its body ends at the NUL.
        let mut wire = wire.to_vec();
        let at = wire.len() - 1;
        wire.splice(at..at, b"plain text".iter().copied());
        let mut codec = StompCodec::new(1024);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire {
            buf.put_u8(b);
            got.extend(decode_all(&mut codec, &mut buf));
        }
        let mut second = frames[1].clone();
        second.body = Bytes::from_static(b"plain text");
        assert_eq!(
            got,
            vec![Item::Frame(frames[0].clone()), Item::Frame(second)]
        );
    }

    #[test]
    fn repeated_headers_keep_the_first() {
        let mut codec = StompCodec::new(1024);
        let mut buf = BytesMut::from(&b"MESSAGE\nfoo:1\nfoo:2\n\n\0"[..]);
        let got = decode_all(&mut codec, &mut buf);
        let Item::Frame(f) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(f.get("foo"), Some("1"));
    }

    #[test]
    fn refuses_malformed_and_oversized_frames() {
        let bad: [&[u8]; 4] = [
            b"MESSAGE\nno colon\n\n\0",
            b"MESSAGE\nx:bad\\t escape\n\n\0",
            b"MESSAGE\ncontent-length:2\n\nabc\0",
            b"MESSAGE\ncontent-length:zwei\n\nab\0",
        ];
        for raw in bad {
            let mut codec = StompCodec::new(1024);
            let mut buf = BytesMut::from(raw);
            assert!(
                matches!(codec.decode(&mut buf), Err(CodecError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let mut codec = StompCodec::new(64);
        let mut buf = BytesMut::from(&b"MESSAGE\ncontent-length:100\n\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::TooLarge(64))
        ));
        let mut codec = StompCodec::new(64);
        let mut buf = BytesMut::from(&[b'x'; 100][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::TooLarge(64))
        ));
    }

    #[test]
    fn escaping_round_trips() {
        for raw in [
            "plain",
            "a:b",
            "back\\slash",
            "new\nline",
            "cr\r",
            "\\c:\\n",
        ] {
            let mut out = BytesMut::new();
            escape(raw, &mut out);
            assert!(!out.contains(&b':') && !out.contains(&b'\n'));
            assert_eq!(unescape(&out).unwrap(), raw);
        }
    }
}
