//! PostgreSQL's binary COPY format, written straight into a byte buffer.
//!
//! Used by `copy` for every COPY the pipeline sends: rows are encoded field by field into one
//! growing buffer that is handed to the connection in blocks of about `BLOCK_BYTES`, so a
//! million-row file costs a few hundred large writes instead of one trait-object call per
//! field and one small message per 4 KiB. The caller writes exactly the fields its COPY column
//! list names, in order (`row` takes the count); the server checks each field's length and
//! rejects a malformed stream, so an encoding bug fails the transaction instead of storing
//! wrong values.

use bytes::{BufMut, Bytes, BytesMut};

/// Size of the blocks handed to the connection.
pub const BLOCK_BYTES: usize = 1 << 20;

/// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01 00:00:00 UTC.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Type OID of `float8`, the element type of `float8[]`.
const FLOAT8_OID: u32 = 701;
/// Type OID of `int2`, the element type of `int2[]`.
const INT2_OID: u32 = 21;

/// A binary COPY stream under construction.
pub struct CopyEncoder {
    buf: BytesMut,
}

impl Default for CopyEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyEncoder {
    /// A stream starting with the binary COPY header.
    pub fn new() -> Self {
        let mut buf = BytesMut::with_capacity(BLOCK_BYTES + 64 * 1024);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0); // flags
        buf.put_i32(0); // header extension length
        Self { buf }
    }

    /// Starts a row of `fields` fields.
    pub fn row(&mut self, fields: i16) {
        self.buf.put_i16(fields);
    }

    /// A `smallint`.
    pub fn i16(&mut self, value: i16) {
        self.buf.put_i32(2);
        self.buf.put_i16(value);
    }

    /// An `integer`.
    pub fn i32(&mut self, value: i32) {
        self.buf.put_i32(4);
        self.buf.put_i32(value);
    }

    /// A `bigint`.
    pub fn i64(&mut self, value: i64) {
        self.buf.put_i32(8);
        self.buf.put_i64(value);
    }

    /// A nullable `bigint`.
    pub fn opt_i64(&mut self, value: Option<i64>) {
        match value {
            Some(value) => self.i64(value),
            None => self.null(),
        }
    }

    /// A `double precision`.
    pub fn f64(&mut self, value: f64) {
        self.buf.put_i32(8);
        self.buf.put_f64(value);
    }

    /// A nullable `double precision`.
    pub fn opt_f64(&mut self, value: Option<f64>) {
        match value {
            Some(value) => self.f64(value),
            None => self.null(),
        }
    }

    /// A `timestamptz` from microseconds since the Unix epoch.
    pub fn timestamp_micros(&mut self, unix_micros: i64) {
        self.i64(unix_micros - POSTGRES_EPOCH_MICROS);
    }

    /// A `text`.
    pub fn text(&mut self, value: &str) {
        self.buf
            .put_i32(i32::try_from(value.len()).unwrap_or(i32::MAX));
        self.buf.put_slice(value.as_bytes());
    }

    /// A nullable `text`.
    pub fn opt_text(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    /// A one-dimensional `double precision[]` without nulls.
    pub fn f64_array(&mut self, values: &[f64]) {
        self.array_header(FLOAT8_OID, values.len(), 8);
        for value in values {
            self.buf.put_i32(8);
            self.buf.put_f64(*value);
        }
    }

    /// A one-dimensional `smallint[]` without nulls.
    pub fn i16_array(&mut self, values: &[i16]) {
        self.array_header(INT2_OID, values.len(), 2);
        for value in values {
            self.buf.put_i32(2);
            self.buf.put_i16(*value);
        }
    }

    /// The field length and header of a one-dimensional array of `count` elements of
    /// `width` bytes: ndim, has-nulls flag, element type, then the dimension (length, lower
    /// bound).
    fn array_header(&mut self, element: u32, count: usize, width: i32) {
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        self.buf.put_i32(20 + (4 + width) * count);
        self.buf.put_i32(1);
        self.buf.put_i32(0);
        self.buf.put_u32(element);
        self.buf.put_i32(count);
        self.buf.put_i32(1);
    }

    /// A null.
    pub fn null(&mut self) {
        self.buf.put_i32(-1);
    }

    /// Takes the encoded bytes once there is a block's worth.
    pub fn full_block(&mut self) -> Option<Bytes> {
        (self.buf.len() >= BLOCK_BYTES).then(|| self.buf.split().freeze())
    }

    /// Ends the stream and takes what is left.
    pub fn finish(mut self) -> Bytes {
        self.buf.put_i16(-1);
        self.buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_row_and_trailer_follow_the_binary_copy_layout() {
        let mut encoder = CopyEncoder::new();
        encoder.row(3);
        encoder.i32(7);
        encoder.null();
        encoder.f64_array(&[1.5]);
        let bytes = encoder.finish();
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend([0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend([0, 3]);
        expected.extend([0, 0, 0, 4, 0, 0, 0, 7]);
        expected.extend([0xff, 0xff, 0xff, 0xff]);
        expected.extend([
            0, 0, 0, 32, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, 189, 0, 0, 0, 1,
        ]);
        expected.extend([0, 0, 0, 1, 0, 0, 0, 8]);
        expected.extend(1.5f64.to_be_bytes());
        expected.extend([0xff, 0xff]);
        assert_eq!(bytes.as_ref(), expected.as_slice());
    }
}
