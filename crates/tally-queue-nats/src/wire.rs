//! What travels on the wire: names of streams and subjects, the headers a command message carries, the
//! stable partition hash, and the JetStream ack subject a delivered message names.

/// The broker-side message id (deduplication within the stream's duplicate window).
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";
/// Expected last sequence of the subject: what makes a lease write a compare-and-set.
pub(crate) const EXPECTED_LAST_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
/// The queue message's id (a UUID), also when `Nats-Msg-Id` differs (a replayed dead letter).
pub(crate) const ID: &str = "Tally-Id";
/// The partition key, percent-encoded.
pub(crate) const KEY: &str = "Tally-Key";
/// Why a message was dead-lettered, percent-encoded.
pub(crate) const REASON: &str = "Tally-Reason";
/// When a message was dead-lettered (RFC 3339).
pub(crate) const FAILED_AT: &str = "Tally-Failed-At";
/// On the status that closes a pull request: how many of its batch it did not deliver.
pub(crate) const PENDING_MESSAGES: &str = "Nats-Pending-Messages";

/// Names of everything one namespace owns on the broker.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub ns: String,
    pub partitions: usize,
}

impl Names {
    pub fn commands_stream(&self) -> String {
        format!("{}_commands", self.ns)
    }
    pub fn commands_subjects(&self) -> String {
        format!("{}.commands.*", self.ns)
    }
    pub fn command_subject(&self, partition: usize) -> String {
        format!("{}.commands.{partition}", self.ns)
    }
    pub fn consumer(&self, partition: usize) -> String {
        format!("partition-{partition}")
    }
    pub fn dead_stream(&self) -> String {
        format!("{}_dead", self.ns)
    }
    pub fn dead_subjects(&self) -> String {
        format!("{}.dead.*", self.ns)
    }
    pub fn dead_subject(&self, message_id: uuid::Uuid) -> String {
        format!("{}.dead.{message_id}", self.ns)
    }
    pub fn lease_stream(&self) -> String {
        format!("{}_leases", self.ns)
    }
    pub fn lease_subject(&self, partition: usize) -> String {
        format!("{}.lease.{partition}", self.ns)
    }
    pub fn member_subjects(&self) -> String {
        format!("{}.member.*", self.ns)
    }
    pub fn member_subject(&self, owner: &str) -> String {
        format!("{}.member.{owner}", self.ns)
    }
    /// The pull request subject of a partition's consumer.
    pub fn next_subject(&self, partition: usize) -> String {
        format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            self.commands_stream(),
            self.consumer(partition)
        )
    }
    /// The partition (subject suffix, consumer) a partition key maps to.
    pub fn partition_of(&self, key: &str) -> usize {
        let n = u64::try_from(self.partitions.max(1)).unwrap_or(1);
        usize::try_from(fnv1a(key.as_bytes()) % n).unwrap_or(0)
    }
}

/// A namespace is one token of a subject and part of stream names: letters, digits, `_` and `-`.
pub(crate) fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 64
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// 64-bit FNV-1a: the same partition for a key in every process and every build (std's hasher is
/// seeded per process).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Percent-encodes everything but printable ASCII other than `%`, so any text fits a header value.
pub(crate) fn encode_header(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode_header`]; `None` for malformed input.
pub(crate) fn decode_header(value: &str) -> Option<String> {
    let raw = value.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What the ack subject (`$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.…`) of a delivered
/// message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckInfo {
    pub stream_seq: u64,
    /// How many times JetStream has delivered it (1 the first time).
    pub delivered: u64,
    /// Messages of the consumer still waiting on the server after this one (not counting
    /// redeliveries).
    pub pending: u64,
}

/// Parses both ack subject formats of ADR-15: 9 tokens, or 11 and more with domain and account hash.
pub(crate) fn parse_ack_subject(reply: &str) -> Option<AckInfo> {
    let rest = reply.strip_prefix("$JS.ACK.")?;
    let tokens: Vec<&str> = rest.split('.').collect();
    let at = match tokens.len() {
        7 => 0,
        n if n >= 9 => 2,
        _ => return None,
    };
    Some(AckInfo {
        delivered: tokens.get(at + 2)?.parse().ok()?,
        stream_seq: tokens.get(at + 3)?.parse().ok()?,
        pending: tokens.get(at + 6)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_published_function() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn partitions_are_stable_and_in_range() {
        let names = Names {
            ns: "t".into(),
            partitions: 16,
        };
        for key in ["store:berlin-1", "a", "", "ü"] {
            let p = names.partition_of(key);
            assert!(p < 16);
            assert_eq!(p, names.partition_of(key));
        }
        let one = Names {
            ns: "t".into(),
            partitions: 1,
        };
        assert_eq!(one.partition_of("anything"), 0);
    }

    #[test]
    fn header_text_round_trips() {
        for text in [
            "cannot decode",
            "",
            "store:s-2",
            "100% sure\r\nnext line",
            "Müller & \"Söhne\"",
        ] {
            let encoded = encode_header(text);
            assert!(
                encoded
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) || b == b'%')
            );
            assert_eq!(decode_header(&encoded).as_deref(), Some(text));
        }
        assert_eq!(decode_header("%4"), None);
        assert_eq!(decode_header("%zz"), None);
    }

    #[test]
    fn ack_subjects_of_both_formats() {
        assert_eq!(
            parse_ack_subject("$JS.ACK.t_commands.partition-3.2.100.7.1790230470084404000.42"),
            Some(AckInfo {
                stream_seq: 100,
                delivered: 2,
                pending: 42
            })
        );
        assert_eq!(
            parse_ack_subject(
                "$JS.ACK.dom.hash.t_commands.partition-3.1.5.7.1790230470084404000.0.tok"
            ),
            Some(AckInfo {
                stream_seq: 5,
                delivered: 1,
                pending: 0
            })
        );
        assert_eq!(parse_ack_subject("_INBOX.x"), None);
        assert_eq!(parse_ack_subject("$JS.ACK.a.b.c"), None);
    }

    #[test]
    fn namespaces() {
        assert!(valid_namespace("tally"));
        assert!(valid_namespace("t_0193-ab"));
        assert!(!valid_namespace(""));
        assert!(!valid_namespace("a.b"));
        assert!(!valid_namespace("a b"));
        assert!(!valid_namespace("a*"));
    }
}
