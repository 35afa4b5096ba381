//! SPDY/3.1 framing, as much as `kubectl port-forward` needs: kubectl
//! 1.32 tunnels a SPDY session through a WebSocket
//! (`SPDY/3.1+portforward.k8s.io`) and opens two streams per forwarded
//! connection. The server side here reads frames, answers SYN_STREAM with
//! SYN_REPLY and PING with PING, and writes DATA.
//!
//! Header blocks are zlib streams that run for the whole session. The
//! client compresses with SPDY/3's dictionary, so reading them needs it;
//! the server's own header blocks are written as stored (uncompressed)
//! deflate blocks, which any inflater reads without a dictionary.

use std::collections::HashMap;

use flate2::{Decompress, FlushDecompress, Status};

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
/// DATA and SYN_STREAM: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// The largest frame read; kubectl's are far smaller.
pub const MAX_FRAME: usize = 1 << 20;
/// DATA written in pieces of at most this.
pub const MAX_DATA: usize = 32 << 10;
/// The most a session's header blocks may inflate to, in all.
const MAX_HEADERS: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY version {0} (only 3 is spoken)")]
    Version(u16),
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("header block: {0}")]
    Headers(String),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Control {
        kind: u16,
        flags: u8,
        payload: Vec<u8>,
    },
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
}

/// Take one whole frame off the front of `buf`, if it holds one.
pub fn parse(buf: &mut Vec<u8>) -> Result<Option<Frame>, SpdyError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = usize::from(buf[5]) << 16 | usize::from(buf[6]) << 8 | usize::from(buf[7]);
    if len > MAX_FRAME {
        return Err(SpdyError::TooLarge(len));
    }
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let rest = buf.split_off(8 + len);
    let frame = std::mem::replace(buf, rest);
    let flags = frame[4];
    let payload = frame[8..].to_vec();
    if frame[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([frame[0] & 0x7f, frame[1]]);
        if version != 3 {
            return Err(SpdyError::Version(version));
        }
        Ok(Some(Frame::Control {
            kind: u16::from_be_bytes([frame[2], frame[3]]),
            flags,
            payload,
        }))
    } else {
        Ok(Some(Frame::Data {
            stream: u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) & 0x7fff_ffff,
            flags,
            data: payload,
        }))
    }
}

fn header(first: [u8; 4], flags: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + len);
    out.extend_from_slice(&first);
    out.push(flags);
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out
}

pub fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let [k0, k1] = kind.to_be_bytes();
    let mut out = header([0x80, 3, k0, k1], flags, payload.len());
    out.extend_from_slice(payload);
    out
}

pub fn data(stream: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut out = header((stream & 0x7fff_ffff).to_be_bytes(), flags, data.len());
    out.extend_from_slice(data);
    out
}

/// The stream id that opens a SYN_STREAM, SYN_REPLY or RST_STREAM payload.
pub fn stream_of(payload: &[u8]) -> Result<u32, SpdyError> {
    let b: [u8; 4] = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(SpdyError::Malformed("control frame without a stream id"))?;
    Ok(u32::from_be_bytes(b) & 0x7fff_ffff)
}

/// SPDY/3's header dictionary: length-prefixed names, then common values.
fn dictionary() -> Vec<u8> {
    const NAMES: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const VALUES: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8",
        "charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut out = Vec::new();
    for name in NAMES {
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    out.extend_from_slice(VALUES.as_bytes());
    out
}

/// The client's header blocks: one zlib stream for the whole session.
pub struct HeaderReader {
    inflate: Decompress,
    dictionary: Vec<u8>,
    total: usize,
}

impl Default for HeaderReader {
    fn default() -> Self {
        HeaderReader {
            inflate: Decompress::new(true),
            dictionary: dictionary(),
            total: 0,
        }
    }
}

impl HeaderReader {
    /// The name/value pairs of one header block.
    pub fn read(&mut self, block: &[u8]) -> Result<HashMap<String, String>, SpdyError> {
        let bad = |e: String| SpdyError::Headers(e);
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        for _ in 0..4096 {
            let before_in = self.inflate.total_in();
            out.reserve(1024);
            let r = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before_in) as usize;
            input = &input[used..];
            match r {
                Ok(Status::Ok | Status::BufError)
                    if input.is_empty() && out.len() < out.capacity() =>
                {
                    break
                }
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| bad(e.to_string()))?;
                }
                Err(e) => return Err(bad(e.to_string())),
            }
            if out.len() > MAX_HEADERS {
                return Err(bad("too large".into()));
            }
        }
        if !input.is_empty() {
            return Err(bad("the block does not inflate".into()));
        }
        self.total += out.len();
        if self.total > MAX_HEADERS {
            return Err(bad("the session's headers are too large".into()));
        }
        decode_pairs(&out)
    }
}

fn decode_pairs(b: &[u8]) -> Result<HashMap<String, String>, SpdyError> {
    let short = || SpdyError::Headers("truncated".into());
    let mut at = 0usize;
    let u32_at = |at: &mut usize| -> Result<usize, SpdyError> {
        let v = b.get(*at..*at + 4).ok_or_else(short)?;
        *at += 4;
        Ok(u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize)
    };
    let count = u32_at(&mut at)?;
    let mut out = HashMap::new();
    for _ in 0..count {
        let n = u32_at(&mut at)?;
        let name = b.get(at..at + n).ok_or_else(short)?;
        at += n;
        let n = u32_at(&mut at)?;
        let value = b.get(at..at + n).ok_or_else(short)?;
        at += n;
        out.insert(
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            String::from_utf8_lossy(value).into_owned(),
        );
    }
    Ok(out)
}

/// The server's header blocks: stored deflate blocks in one zlib stream.
#[derive(Default)]
pub struct HeaderWriter {
    started: bool,
}

/// Name/value pairs as a SPDY/3 header block before compression.
fn encode_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
    for (k, v) in pairs {
        raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
        raw.extend_from_slice(k.as_bytes());
        raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
        raw.extend_from_slice(v.as_bytes());
    }
    raw
}

impl HeaderWriter {
    pub fn write(&mut self, pairs: &[(&str, &str)]) -> Vec<u8> {
        let raw = encode_pairs(pairs);
        let mut out = Vec::with_capacity(raw.len() + 16);
        if !self.started {
            // zlib header: deflate, 32 KiB window, no dictionary.
            out.extend_from_slice(&[0x78, 0x01]);
            self.started = true;
        }
        for chunk in raw.chunks(0xffff) {
            stored_block(&mut out, chunk);
        }
        // An empty stored block, as a sync flush ends: inflaters hand over
        // what they hold when they reach it, having read the whole block.
        stored_block(&mut out, &[]);
        out
    }
}

/// A non-final stored deflate block (starting on a byte boundary).
fn stored_block(out: &mut Vec<u8>, data: &[u8]) {
    let len = data.len() as u16;
    out.push(0x00);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    #[test]
    fn frames_round_trip_and_split_where_they_end() {
        let mut buf = control(PING, 0, &7u32.to_be_bytes());
        buf.extend(data(5, FLAG_FIN, b"hello"));
        buf.extend_from_slice(&[0x80, 3]);
        assert_eq!(
            parse(&mut buf).unwrap(),
            Some(Frame::Control {
                kind: PING,
                flags: 0,
                payload: 7u32.to_be_bytes().to_vec()
            })
        );
        assert_eq!(
            parse(&mut buf).unwrap(),
            Some(Frame::Data {
                stream: 5,
                flags: FLAG_FIN,
                data: b"hello".to_vec()
            })
        );
        assert_eq!(parse(&mut buf).unwrap(), None);
        let mut v2 = control(PING, 0, &[0; 4]);
        v2[1] = 2;
        assert!(matches!(parse(&mut v2), Err(SpdyError::Version(2))));
    }

    #[test]
    fn header_blocks_compressed_with_the_dictionary_are_read() {
        // As a client compresses: one stream, the dictionary, a sync flush
        // per block.
        let mut deflate = Compress::new(Compression::best(), true);
        deflate.set_dictionary(&dictionary()).unwrap();
        let mut reader = HeaderReader::default();
        for (port, kind) in [("8080", "error"), ("8080", "data"), ("9090", "data")] {
            let raw = encode_pairs(&[("streamtype", kind), ("port", port)]);
            let mut block = Vec::with_capacity(raw.len() + 64);
            deflate
                .compress_vec(&raw, &mut block, FlushCompress::Sync)
                .unwrap();
            let h = reader.read(&block).unwrap();
            assert_eq!(h["streamtype"], kind);
            assert_eq!(h["port"], port);
        }
    }

    #[test]
    fn the_servers_header_blocks_inflate_without_a_dictionary() {
        let mut writer = HeaderWriter::default();
        let mut inflate = Decompress::new(true);
        for _ in 0..2 {
            let block = writer.write(&[("a", "b")]);
            let mut out = Vec::with_capacity(64);
            inflate
                .decompress_vec(&block, &mut out, FlushDecompress::Sync)
                .unwrap();
            assert_eq!(decode_pairs(&out).unwrap()["a"], "b");
        }
    }
}
