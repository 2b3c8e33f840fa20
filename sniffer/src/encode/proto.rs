//! The few protocol-buffers encodings the OTLP body needs, written by hand (varints, length-
//! delimited fields, fixed64), and reading fields back (the collector's answer,
//! [`crate::deliver::answer`]).

/// Wire type of varint fields.
pub const VARINT: u8 = 0;
/// Wire type of 64-bit fixed fields.
const FIXED64: u8 = 1;
/// Wire type of length-delimited fields (strings, bytes, messages).
pub const LEN: u8 = 2;

/// Bytes the varint of `value` takes.
#[must_use]
pub const fn varint_len(mut value: u64) -> usize {
    let mut n = 1;
    while value >= 0x80 {
        value >>= 7;
        n += 1;
    }
    n
}

/// Appends `value` as a varint.
pub fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

/// Bytes a length-delimited field `field` with `len` bytes of content takes.
#[must_use]
pub const fn len_field_size(field: u32, len: usize) -> usize {
    varint_len((field as u64) << 3) + varint_len(len as u64) + len
}

/// Appends the tag and length of a length-delimited field whose `len` bytes follow.
pub fn len_header(out: &mut Vec<u8>, field: u32, len: usize) {
    tag(out, field, LEN);
    varint(out, len as u64);
}

/// Appends a string field.
pub fn string(out: &mut Vec<u8>, field: u32, value: &str) {
    bytes(out, field, value.as_bytes());
}

/// Appends a string or bytes field: `value` must be UTF-8 for a string field.
pub fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    len_header(out, field, value.len());
    out.extend_from_slice(value);
}

/// Appends a `fixed64` field.
pub fn fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    tag(out, field, FIXED64);
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends an `int64` field (a varint; negative values take ten bytes).
pub fn int64(out: &mut Vec<u8>, field: u32, value: i64) {
    tag(out, field, VARINT);
    varint(out, value as u64);
}

/// Appends an embedded message field whose content `write` appends. The length is patched in
/// afterwards; content over 127 bytes is moved to make room for a longer length.
pub fn message(out: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    let at = out.len();
    out.push(0);
    write(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        // Most messages (every attribute): the byte left for the length holds it.
        out[at] = len as u8;
        return;
    }
    let mut length = Vec::with_capacity(10);
    varint(&mut length, len as u64);
    out.splice(at..=at, length);
}

/// Reads a varint at the start of `bytes`: its value and its length.
fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((value, i + 1));
        }
    }
    None
}

/// One field read back: its number, wire type, varint value (or length), and bytes.
pub type Field<'a> = (u32, u8, u64, &'a [u8]);

/// The fields of a message whose end may be cut off (the first bytes of a longer answer): every
/// whole field, then the readable start of a length-delimited one that is cut (its bytes as far
/// as they go). `None` when the bytes are not protobuf.
#[must_use]
pub fn prefix_fields(mut bytes: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let Some((key, n)) = read_varint(bytes) else {
            // A key cut off at the end.
            return (bytes.len() < 10).then_some(fields);
        };
        bytes = &bytes[n..];
        let (field, wire) = (u32::try_from(key >> 3).ok()?, (key & 7) as u8);
        let taken = match wire {
            VARINT => match read_varint(bytes) {
                Some((value, n)) => {
                    fields.push((field, wire, value, &bytes[..0]));
                    n
                }
                None if bytes.len() < 10 => break,
                None => return None,
            },
            FIXED64 | 5 => {
                let size = if wire == FIXED64 { 8 } else { 4 };
                let Some(value) = bytes.get(..size) else {
                    break;
                };
                fields.push((field, wire, 0, value));
                size
            }
            LEN => {
                let Some((len, n)) = read_varint(bytes) else {
                    break;
                };
                let content = &bytes[n..];
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                // Cut off: keep what there is; it is the last field.
                let end = len.min(content.len());
                fields.push((field, wire, len as u64, &content[..end]));
                n + end
            }
            _ => return None,
        };
        bytes = &bytes[taken..];
    }
    Some(fields)
}

/// Reading bodies back, for tests of the encoders.
#[cfg(test)]
pub(crate) mod tests_support {
    /// The top-level fields of `bytes`: (field number, total bytes the field takes).
    pub(crate) fn fields(bytes: &[u8]) -> Vec<(u32, usize)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let before = rest.len();
            let parsed = super::prefix_fields(rest).expect("valid protobuf");
            let (field, wire, len, content) = parsed[0];
            assert!(wire != super::LEN || content.len() as u64 == len, "cut off");
            let end = content.as_ptr() as usize - rest.as_ptr() as usize + content.len();
            out.push((field, end));
            rest = &rest[end..];
            assert!(rest.len() < before);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        for (value, bytes) in [
            (0u64, vec![0]),
            (1, vec![1]),
            (127, vec![0x7f]),
            (128, vec![0x80, 1]),
            (300, vec![0xac, 2]),
            (
                u64::MAX,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1],
            ),
        ] {
            let mut out = Vec::new();
            varint(&mut out, value);
            assert_eq!(out, bytes, "{value}");
            assert_eq!(varint_len(value), bytes.len());
            assert_eq!(read_varint(&bytes), Some((value, bytes.len())));
        }
    }

    #[test]
    fn messages_get_their_length_patched_in() {
        for len in [0, 5, 127, 128, 300, 20_000] {
            let mut out = vec![9];
            message(&mut out, 2, |out| out.extend(std::iter::repeat_n(7u8, len)));
            let parsed = prefix_fields(&out[1..]).unwrap();
            assert_eq!(parsed.len(), 1);
            assert_eq!(
                (parsed[0].0, parsed[0].1, parsed[0].2),
                (2, LEN, len as u64)
            );
            assert_eq!(out.len(), 1 + len_field_size(2, len));
        }
    }
}
