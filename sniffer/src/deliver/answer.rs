//! What an OTLP collector's `2xx` answer says about a batch: `partialSuccess`, the records it
//! rejected although it accepted the request. Only the first [`MAX_ANSWER_BYTES`] of an answer
//! are read; the count comes first in both encodings (serializers write fields in field order),
//! so a long error message cut off there still gives the count. Every count saturates at the
//! batch: one too large for 64 bits, or negative (nonsense for a count), rejects the whole batch.

use std::{borrow::Cow, fmt};

use log::warn;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use sidecar_contract::echo::Echo;

use crate::encode::{
    Format,
    proto::{LEN, VARINT, prefix_fields},
};

/// How much of an answer is read: an OTLP `partialSuccess` is a count and a message.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What an `ExportLogsServiceResponse` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartialSuccess {
    /// `rejectedLogRecords`; `None` when the answer does not say. A count beyond `u64`, or a
    /// negative one, is `u64::MAX`.
    pub rejected: Option<u64>,
    /// `errorMessage`, or as much of it as was read.
    pub message: String,
}

/// Why an answer could not be read: a fixed phrase for the log line.
pub type Unreadable = &'static str;

const CUT_BEFORE_COUNT: Unreadable =
    "the answer is longer than the 64 KiB read and names no count within them";

/// The records of a batch of `count` that the collector's answer (its first bytes; `truncated`
/// when more followed) says it rejected, logged with a warning; 0 for formats without partial
/// success. An answer that cannot be read counts as a full success, with a warning that says so.
#[must_use]
pub fn rejected_records(
    format: Format,
    answer: &[u8],
    truncated: bool,
    seq: u64,
    count: u64,
) -> u64 {
    let partial = match format {
        Format::OtlpProtobuf => protobuf(answer, truncated),
        Format::OtlpJson => json(answer, truncated),
        Format::Batch | Format::Ndjson | Format::Loki => return 0,
    };
    match partial {
        Ok(PartialSuccess {
            rejected: None | Some(0),
            ..
        }) => 0,
        Ok(PartialSuccess {
            rejected: Some(rejected),
            message,
        }) => {
            let rejected = rejected.min(count);
            let message = Echo(&message).to_string();
            warn!(seq, records = count, rejected, error = message.as_str(); "collector accepted the batch but rejected {rejected} of its records; they are counted as dropped");
            rejected
        }
        Err(problem) => {
            warn!(seq, records = count, error = problem; "cannot read the collector's OTLP answer; the batch counts as delivered");
            0
        }
    }
}

/// A protobuf `ExportLogsServiceResponse`, from its first bytes.
///
/// # Errors
///
/// When the bytes are not protobuf, or are cut before the count.
pub fn protobuf(answer: &[u8], truncated: bool) -> Result<PartialSuccess, Unreadable> {
    let not_protobuf = "the answer is not a protobuf ExportLogsServiceResponse";
    let mut partial = PartialSuccess::default();
    for (field, wire, _, bytes) in prefix_fields(answer).ok_or(not_protobuf)? {
        if (field, wire) != (1, LEN) {
            continue;
        }
        for (field, wire, value, bytes) in prefix_fields(bytes).ok_or(not_protobuf)? {
            match (field, wire) {
                // int64 read as unsigned: a negative count is huge, and saturates.
                (1, VARINT) => partial.rejected = Some(value),
                (2, LEN) => partial.message = String::from_utf8_lossy(bytes).into_owned(),
                _ => {}
            }
        }
    }
    if truncated && partial.rejected.is_none() {
        return Err(CUT_BEFORE_COUNT);
    }
    Ok(partial)
}

/// A JSON `ExportLogsServiceResponse`, from its first bytes. The count may be a string (the JSON
/// mapping writes 64-bit integers so) or a number, integral even when written `40.0`.
///
/// # Errors
///
/// When the bytes are not such JSON, the count is not a count, or the answer is cut before it.
pub fn json(answer: &[u8], truncated: bool) -> Result<PartialSuccess, Unreadable> {
    let mut partial = PartialSuccess::default();
    if answer.iter().all(u8::is_ascii_whitespace) {
        return if truncated {
            Err(CUT_BEFORE_COUNT)
        } else {
            Ok(partial)
        };
    }
    // A number cut at the end of the bytes read would parse as a smaller one (`2` of `200`):
    // cut answers lose their trailing number characters, so such a count reads as cut off.
    let answer = if truncated {
        let kept = answer
            .iter()
            .rposition(|b| !matches!(b, b'0'..=b'9' | b'+' | b'-' | b'.' | b'e' | b'E'))
            .map_or(0, |last| last + 1);
        &answer[..kept]
    } else {
        answer
    };
    let mut parser = serde_json::Deserializer::from_slice(answer);
    // The visitors write what they read into `partial` as they go, so a count read before the
    // answer is cut off survives the parse error at its end.
    let parsed = Response(&mut partial)
        .deserialize(&mut parser)
        .and_then(|()| parser.end());
    match parsed {
        Ok(()) => Ok(partial),
        Err(err) if err.is_eof() && truncated => {
            if partial.rejected.is_some() {
                Ok(partial)
            } else {
                Err(CUT_BEFORE_COUNT)
            }
        }
        Err(err) if err.is_data() && err.to_string().starts_with(NOT_A_COUNT) => {
            Err("its rejectedLogRecords is not a count")
        }
        Err(_) => Err("the answer is not a JSON ExportLogsServiceResponse"),
    }
}

const NOT_A_COUNT: &str = "not a count";

/// The top-level object: only `partialSuccess` matters.
struct Response<'a>(&'a mut PartialSuccess);

impl<'de> DeserializeSeed<'de> for Response<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Response<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an ExportLogsServiceResponse object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if matches!(key.as_ref(), "partialSuccess" | "partial_success") {
                map.next_value_seed(Partial(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// `partialSuccess`: an object, or null.
struct Partial<'a>(&'a mut PartialSuccess);

impl<'de> DeserializeSeed<'de> for Partial<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Partial<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a partialSuccess object")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "rejectedLogRecords" | "rejected_log_records" => {
                    self.0.rejected = map.next_value_seed(Count)?;
                }
                "errorMessage" | "error_message" => {
                    let message: Option<Cow<'de, str>> = map.next_value()?;
                    self.0.message = message.unwrap_or_default().into_owned();
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// `rejectedLogRecords`: a string or a number, saturating at `u64::MAX`.
struct Count;

impl<'de> DeserializeSeed<'de> for Count {
    type Value = Option<u64>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for Count {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NOT_A_COUNT)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Some(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Self::Value, E> {
        // Negative: nonsense, and saturates like a count too large.
        Ok(Some(u64::try_from(value).unwrap_or(u64::MAX)))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        if !value.is_finite() || value.fract() != 0.0 {
            return Err(E::custom(NOT_A_COUNT));
        }
        // A float-to-integer cast saturates: 1e20 is u64::MAX, a negative value 0, which is
        // nonsense like any negative count: the whole batch.
        Ok(Some(if value < 0.0 { u64::MAX } else { value as u64 }))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        let digits = text.strip_prefix('+').unwrap_or(text);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Some(digits.parse().unwrap_or(u64::MAX)));
        }
        match text.parse::<f64>() {
            Ok(value) => self.visit_f64(value),
            Err(_) => Err(E::custom(NOT_A_COUNT)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::proto::{int64, message, string};

    fn read(rejected: Option<u64>, message: &str) -> Result<PartialSuccess, Unreadable> {
        Ok(PartialSuccess {
            rejected,
            message: message.to_owned(),
        })
    }

    fn protobuf_answer(rejected: i64, message_text: &str) -> Vec<u8> {
        let mut response = Vec::new();
        message(&mut response, 1, |out| {
            int64(out, 1, rejected);
            string(out, 2, message_text);
        });
        response
    }

    #[test]
    fn protobuf_partial_success_is_read() {
        assert_eq!(
            protobuf(&protobuf_answer(42, "too old"), false),
            read(Some(42), "too old")
        );
        assert_eq!(protobuf(&[], false), read(None, ""));
        assert!(protobuf(&[0x0a, 0x05, 0x07], false).is_err());
        // int64 -3 and 2^63 are huge as unsigned: they saturate to the batch.
        assert_eq!(
            protobuf(&protobuf_answer(-3, ""), false).unwrap().rejected,
            Some(u64::MAX - 2)
        );
        assert_eq!(
            protobuf(&protobuf_answer(i64::MIN, ""), false)
                .unwrap()
                .rejected,
            Some(1 << 63)
        );
    }

    #[test]
    fn a_long_protobuf_answer_cut_after_its_count_is_read() {
        let long = "x".repeat(70_000);
        let whole = protobuf_answer(200, &long);
        let partial = protobuf(&whole[..MAX_ANSWER_BYTES], true).unwrap();
        assert_eq!(partial.rejected, Some(200));
        assert!(partial.message.len() > 60_000 && partial.message.len() < 70_000);
        // Cut before the count (a message written first): it cannot say.
        let mut early = Vec::new();
        message(&mut early, 1, |out| {
            string(out, 2, &long);
            int64(out, 1, 200);
        });
        assert_eq!(
            protobuf(&early[..MAX_ANSWER_BYTES], true),
            Err(CUT_BEFORE_COUNT)
        );
        assert_eq!(protobuf(&whole[..3], true), Err(CUT_BEFORE_COUNT));
    }

    #[test]
    fn json_counts_in_every_form_saturate() {
        for (count, expected) in [
            (r#""3""#, Some(3)),
            ("7", Some(7)),
            ("40.0", Some(40)),
            (r#""40.0""#, Some(40)),
            ("99999999999999999999", Some(u64::MAX)),
            (r#""99999999999999999999""#, Some(u64::MAX)),
            ("-3", Some(u64::MAX)),
            ("null", None),
        ] {
            let answer = format!(
                r#"{{"partialSuccess":{{"rejectedLogRecords":{count},"errorMessage":"x"}}}}"#
            );
            assert_eq!(
                json(answer.as_bytes(), false).map(|p| p.rejected),
                Ok(expected),
                "{count}"
            );
        }
        for count in ["40.5", r#""many""#, "[]", "true"] {
            let answer = format!(r#"{{"partialSuccess":{{"rejectedLogRecords":{count}}}}}"#);
            assert!(json(answer.as_bytes(), false).is_err(), "{count}");
        }
        assert_eq!(json(br#"{"partialSuccess":{}}"#, false), read(None, ""));
        assert_eq!(json(br#"{"partialSuccess":null}"#, false), read(None, ""));
        assert_eq!(json(b"", false), read(None, ""));
        assert_eq!(json(b"{}", false), read(None, ""));
        assert!(json(b"[]", false).is_err());
        assert!(json(b"not json", false).is_err());
        assert!(json(b"{} trailing", false).is_err());
    }

    #[test]
    fn a_long_json_answer_cut_after_its_count_is_read() {
        let long = "x".repeat(70_000);
        let whole = format!(
            r#"{{"partialSuccess":{{"rejectedLogRecords":"200","errorMessage":"{long}"}}}}"#
        );
        let partial = json(&whole.as_bytes()[..MAX_ANSWER_BYTES], true).unwrap();
        assert_eq!(partial.rejected, Some(200));
        let early = format!(
            r#"{{"partialSuccess":{{"errorMessage":"{long}","rejectedLogRecords":"200"}}}}"#
        );
        assert_eq!(
            json(&early.as_bytes()[..MAX_ANSWER_BYTES], true),
            Err(CUT_BEFORE_COUNT)
        );
        // Cut inside the count: not believed, whether a string or a number.
        for cut in [
            &br#"{"partialSuccess":{"rejectedLogRecords":"2"#[..],
            br#"{"partialSuccess":{"rejectedLogRecords":2"#,
            br#"{"partialSuccess":{"rejectedLogRecords":2.0e"#,
        ] {
            assert_eq!(json(cut, true), Err(CUT_BEFORE_COUNT));
        }
        assert_eq!(
            json(
                br#"{"partialSuccess":{"rejectedLogRecords":2,"errorM"#,
                true
            )
            .map(|p| p.rejected),
            Ok(Some(2))
        );
    }

    #[test]
    fn counts_saturate_to_the_batch_and_unreadable_answers_count_as_delivered() {
        let all = br#"{"partialSuccess":{"rejectedLogRecords":"99999999999999999999"}}"#;
        assert_eq!(rejected_records(Format::OtlpJson, all, false, 0, 200), 200);
        assert_eq!(
            rejected_records(Format::OtlpJson, b"oops", false, 0, 200),
            0
        );
        let huge = protobuf_answer(i64::MIN, "");
        assert_eq!(
            rejected_records(Format::OtlpProtobuf, &huge, false, 0, 7),
            7
        );
        assert_eq!(rejected_records(Format::Batch, all, false, 0, 200), 0);
    }
}
