//! The few protocol-buffers encodings the OTLP body needs, written by hand (varints, length-
//! delimited fields, fixed64), and the one message read back (`ExportLogsServiceResponse`).

/// Wire type of varint fields.
const VARINT: u8 = 0;
/// Wire type of 64-bit fixed fields.
const FIXED64: u8 = 1;
/// Wire type of length-delimited fields (strings, bytes, messages).
const LEN: u8 = 2;

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
    len_header(out, field, value.len());
    out.extend_from_slice(value.as_bytes());
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
    let size = varint_len(len as u64);
    if size > 1 {
        out.splice(at + 1..at + 1, std::iter::repeat_n(0, size - 1));
    }
    let mut length = Vec::with_capacity(size);
    varint(&mut length, len as u64);
    out[at..at + size].copy_from_slice(&length);
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
type Field<'a> = (u32, u8, u64, &'a [u8]);

/// The fields of a message.
fn fields(mut bytes: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let (key, n) = read_varint(bytes)?;
        bytes = &bytes[n..];
        let (field, wire) = (u32::try_from(key >> 3).ok()?, (key & 7) as u8);
        match wire {
            VARINT => {
                let (value, n) = read_varint(bytes)?;
                fields.push((field, wire, value, &bytes[..0]));
                bytes = &bytes[n..];
            }
            FIXED64 => {
                fields.push((field, wire, 0, bytes.get(..8)?));
                bytes = &bytes[8..];
            }
            LEN => {
                let (len, n) = read_varint(bytes)?;
                let end = n.checked_add(usize::try_from(len).ok()?)?;
                fields.push((field, wire, len, bytes.get(n..end)?));
                bytes = &bytes[end..];
            }
            5 => {
                fields.push((field, wire, 0, bytes.get(..4)?));
                bytes = &bytes[4..];
            }
            _ => return None,
        }
    }
    Some(fields)
}

/// `partial_success.rejected_log_records` of an `ExportLogsServiceResponse` (0 when absent), and
/// its `error_message`; `None` when the bytes are not such a message.
#[must_use]
pub fn partial_success(response: &[u8]) -> Option<(u64, String)> {
    let mut rejected = 0;
    let mut message = String::new();
    for (field, wire, _, bytes) in fields(response)? {
        if (field, wire) != (1, LEN) {
            continue;
        }
        for (field, wire, value, bytes) in fields(bytes)? {
            match (field, wire) {
                // int64: a negative count is nonsense, and counts as nothing rejected.
                (1, VARINT) => rejected = i64::try_from(value).map_or(0, |v| v.max(0) as u64),
                (2, LEN) => message = String::from_utf8_lossy(bytes).into_owned(),
                _ => {}
            }
        }
    }
    Some((rejected, message))
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
            let parsed = super::fields(rest).expect("valid protobuf");
            let (field, _, _, content) = parsed[0];
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
            let parsed = fields(&out[1..]).unwrap();
            assert_eq!(parsed.len(), 1);
            assert_eq!(
                (parsed[0].0, parsed[0].1, parsed[0].2),
                (2, LEN, len as u64)
            );
            assert_eq!(out.len(), 1 + len_field_size(2, len));
        }
    }

    #[test]
    fn partial_success_is_read() {
        let mut response = Vec::new();
        message(&mut response, 1, |out| {
            int64(out, 1, 42);
            string(out, 2, "too old");
        });
        assert_eq!(partial_success(&response), Some((42, "too old".to_owned())));
        assert_eq!(partial_success(&[]), Some((0, String::new())));
        assert_eq!(partial_success(&[0x0a, 0x05, 0x08]), None);
        let mut negative = Vec::new();
        message(&mut negative, 1, |out| int64(out, 1, -3));
        assert_eq!(partial_success(&negative), Some((0, String::new())));
    }
}
