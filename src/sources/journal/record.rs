//! The push journal's record format, and the scan that finds where a segment's good records
//! end.
//!
//! A record is `[length u32][crc32 u32][sequence u64][meta length u32][meta JSON][body]`, all
//! integers little-endian; `length` counts every byte after the checksum, and the checksum
//! (CRC-32, IEEE) covers them. A record cut short by a crash, or with bytes that do not match
//! its checksum, ends the segment's good part: nothing after it was ever acknowledged.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Bytes before a record's checksummed part: length and checksum.
const FRAME_BYTES: usize = 8;

/// Largest record taken when a segment is scanned (a body is at most 1 MiB, with its meta).
const MAX_RECORD_BYTES: u32 = 16 * 1024 * 1024;

/// What the journal keeps of a body besides its bytes: enough to load it as the delivery it
/// would have been, and the answer its client was given.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// The receipt (`<journal id>-<sequence>`); set by the journal when it appends.
    pub receipt_id: String,
    /// When the body was received.
    pub received_at: DateTime<Utc>,
    /// The delivery's name.
    pub name: String,
    /// The client (the delivery's origin is `http:<client>`).
    pub client: String,
    /// The `Idempotency-Key`, if one was given.
    pub key: Option<String>,
    /// Set when the body is a CSV rendering of JSON: lines to subtract from a CSV line number.
    pub line_shift: Option<i64>,
    /// What makes a second push of the same body the same one while it is journaled: the key,
    /// or the SHA-256 of the bytes.
    pub identity: String,
    /// A device push: the device and its sensors (recorded before the body is loaded).
    pub device: Option<DeviceSensors>,
    /// The answer the client got, receipt id aside.
    pub answer: Answer,
}

/// A device and the sensors of its body: (sensor id, sensor type).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceSensors {
    /// The device, e.g. `esp8266-3654427`.
    pub device: String,
    /// Its sensors in this body.
    pub sensors: Vec<(i64, String)>,
}

/// An HTTP answer: status code and JSON body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    /// The status code (202, or 400/422 for a body rejected whole).
    pub status: u16,
    /// The receipt as sent.
    pub body: serde_json::Value,
}

/// A record read back.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its place in the journal.
    pub sequence: u64,
    /// What the journal keeps besides the bytes.
    pub meta: Meta,
    /// The body (CSV, or a CSV rendering).
    pub body: Bytes,
}

/// Encodes one record.
///
/// # Errors
/// The meta cannot be serialized (it always can).
pub fn encode(sequence: u64, meta: &Meta, body: &[u8]) -> serde_json::Result<Vec<u8>> {
    let meta = serde_json::to_vec(meta)?;
    let payload_len = 8 + 4 + meta.len() + body.len();
    let mut out = Vec::with_capacity(FRAME_BYTES + payload_len);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(body);
    let checksum = crc32fast::hash(&out[FRAME_BYTES..]);
    out[4..8].copy_from_slice(&checksum.to_le_bytes());
    Ok(out)
}

/// Decodes a record's checksummed part.
fn decode(payload: &[u8]) -> Result<Record, String> {
    if payload.len() < 12 {
        return Err("record shorter than its header".to_owned());
    }
    let sequence = u64::from_le_bytes(payload[0..8].try_into().expect("8 bytes"));
    let meta_len = u32::from_le_bytes(payload[8..12].try_into().expect("4 bytes")) as usize;
    let meta_end = 12usize
        .checked_add(meta_len)
        .filter(|end| *end <= payload.len())
        .ok_or("meta longer than the record")?;
    let meta: Meta = serde_json::from_slice(&payload[12..meta_end]).map_err(|e| e.to_string())?;
    Ok(Record {
        sequence,
        meta,
        body: Bytes::copy_from_slice(&payload[meta_end..]),
    })
}

/// A good record of a segment, located.
#[derive(Debug, Clone)]
pub struct Located {
    /// Its sequence number.
    pub sequence: u64,
    /// Byte offset in the segment.
    pub offset: u64,
    /// Bytes of the whole record.
    pub len: u32,
    /// Its meta.
    pub meta: Meta,
}

/// What a scan of a segment found.
#[derive(Debug)]
pub struct Scanned {
    /// The good records, in order.
    pub records: Vec<Located>,
    /// Bytes of the good part (where the next record starts).
    pub good_len: u64,
    /// Bytes of the file.
    pub file_len: u64,
    /// Why the good part ends before the file does, if it does.
    pub tail_problem: Option<String>,
}

/// Reads a segment from the start and stops at the first record that is incomplete or does
/// not match its checksum.
///
/// # Errors
/// The file cannot be read.
pub fn scan(path: &Path) -> io::Result<Scanned> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let file_len = bytes.len() as u64;
    let mut records = Vec::new();
    let mut at = 0usize;
    let mut tail_problem = None;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < FRAME_BYTES {
            tail_problem = Some(format!("{} bytes of a record header", rest.len()));
            break;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
        let checksum = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len > MAX_RECORD_BYTES || rest.len() - FRAME_BYTES < len as usize {
            tail_problem = Some(format!(
                "a record of {len} bytes with {} bytes left in the file",
                rest.len() - FRAME_BYTES
            ));
            break;
        }
        let payload = &rest[FRAME_BYTES..FRAME_BYTES + len as usize];
        if crc32fast::hash(payload) != checksum {
            tail_problem = Some("a record whose checksum does not match".to_owned());
            break;
        }
        match decode(payload) {
            Ok(record) => records.push(Located {
                sequence: record.sequence,
                offset: at as u64,
                len: FRAME_BYTES as u32 + len,
                meta: record.meta,
            }),
            Err(problem) => {
                tail_problem = Some(problem);
                break;
            }
        }
        at += FRAME_BYTES + len as usize;
    }
    Ok(Scanned {
        records,
        good_len: at as u64,
        file_len,
        tail_problem,
    })
}

/// Reads the record at `offset` (`len` bytes) of an open segment.
///
/// # Errors
/// The read failed, or the bytes are not the record they should be.
pub fn read_at(file: &File, offset: u64, len: u32) -> io::Result<Record> {
    let mut bytes = vec![0; len as usize];
    file.read_exact_at(&mut bytes, offset)?;
    if bytes.len() < FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "journal record too short",
        ));
    }
    let checksum = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let payload = &bytes[FRAME_BYTES..];
    if crc32fast::hash(payload) != checksum {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("journal record at byte {offset} does not match its checksum"),
        ));
    }
    decode(payload).map_err(|problem| io::Error::new(io::ErrorKind::InvalidData, problem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(receipt: &str) -> Meta {
        Meta {
            receipt_id: receipt.to_owned(),
            received_at: Utc::now(),
            name: "request.csv".to_owned(),
            client: "127.0.0.1".to_owned(),
            key: None,
            line_shift: Some(2),
            identity: "sha256:00".to_owned(),
            device: None,
            answer: Answer {
                status: 202,
                body: serde_json::json!({"status": "journaled"}),
            },
        }
    }

    #[test]
    fn records_read_back_and_a_torn_or_damaged_tail_ends_the_good_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let first = encode(7, &meta("a-7"), b"sensor_id;timestamp\n").unwrap();
        let second = encode(8, &meta("a-8"), b"x").unwrap();
        let mut bytes = [first.clone(), second.clone()].concat();
        std::fs::write(&path, &bytes).unwrap();
        let scanned = scan(&path).unwrap();
        assert_eq!(scanned.records.len(), 2);
        assert_eq!(scanned.good_len, bytes.len() as u64);
        assert!(scanned.tail_problem.is_none());
        let file = File::open(&path).unwrap();
        let located = &scanned.records[0];
        let record = read_at(&file, located.offset, located.len).unwrap();
        assert_eq!(record.sequence, 7);
        assert_eq!(record.meta.receipt_id, "a-7");
        assert_eq!(&record.body[..], b"sensor_id;timestamp\n");

        // Torn: the second record cut short.
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let scanned = scan(&path).unwrap();
        assert_eq!(scanned.records.len(), 1);
        assert_eq!(scanned.good_len, first.len() as u64);
        assert!(scanned.tail_problem.is_some());

        // Damaged: one byte of the second record's body changed.
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let scanned = scan(&path).unwrap();
        assert_eq!(scanned.records.len(), 1);
        assert!(scanned.tail_problem.unwrap().contains("checksum"));
    }
}
