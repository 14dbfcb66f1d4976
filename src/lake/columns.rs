//! The columns of the lake's tables, declared once: each table's Delta schema and the Arrow
//! schema of its batches come from the same list, so they cannot disagree. The names and order
//! are those of the PostgreSQL views the tables copy (`v_readings`, `v_files`,
//! `v_aggregates`); `readings` adds its partition column, the UTC `date` of `ts`.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType as ArrowType, Field, Schema, TimeUnit};
use deltalake::kernel::{DataType, PrimitiveType, StructField};

/// A column's type, as PostgreSQL, Arrow and Delta all know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `bigint`, Arrow Int64, Delta long.
    Long,
    /// `integer`, Arrow Int32, Delta integer.
    Int,
    /// `double precision`, Arrow Float64, Delta double.
    Double,
    /// `text`, Arrow Utf8, Delta string.
    Text,
    /// `timestamptz`, Arrow timestamp (µs, UTC), Delta timestamp.
    Timestamp,
    /// A UTC date, Arrow Date32, Delta date.
    Date,
}

/// One column of a lake table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Its name, that of the view's column.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Whether it may be null.
    pub nullable: bool,
}

const fn column(name: &'static str, kind: Kind, nullable: bool) -> Column {
    Column {
        name,
        kind,
        nullable,
    }
}

/// `readings`: the columns of `v_readings`, then the partition column.
pub const READINGS: &[Column] = &[
    column("file_id", Kind::Long, false),
    column("line", Kind::Int, false),
    column("sensor_id", Kind::Long, false),
    column("sensor_type", Kind::Text, false),
    column("location_id", Kind::Long, true),
    column("lat", Kind::Double, true),
    column("lon", Kind::Double, true),
    column("ts", Kind::Timestamp, false),
    column("measurement", Kind::Text, false),
    column("value", Kind::Double, false),
    column("unit", Kind::Text, false),
    column("date", Kind::Date, false),
];

/// `files`: the columns of `v_files`.
pub const FILES: &[Column] = &[
    column("file_id", Kind::Long, false),
    column("file_name", Kind::Text, false),
    column("content_sha256", Kind::Text, false),
    column("status", Kind::Text, false),
    column("rows_read", Kind::Long, false),
    column("rows_loaded", Kind::Long, false),
    column("rows_rejected", Kind::Long, false),
    column("received_at", Kind::Timestamp, false),
    column("finished_at", Kind::Timestamp, false),
    column("error", Kind::Text, true),
    column("size_bytes", Kind::Long, false),
    column("reading_count", Kind::Long, false),
];

/// `aggregates`: the columns of `v_aggregates`.
pub const AGGREGATES: &[Column] = &[
    column("file_id", Kind::Long, false),
    column("file_name", Kind::Text, false),
    column("scope", Kind::Text, false),
    column("sensor_type", Kind::Text, false),
    column("sensor_id", Kind::Long, true),
    column("location_id", Kind::Long, true),
    column("measurement", Kind::Text, false),
    column("unit", Kind::Text, false),
    column("n", Kind::Long, false),
    column("min", Kind::Double, false),
    column("max", Kind::Double, false),
    column("mean", Kind::Double, false),
    column("stddev", Kind::Double, true),
    column("first_ts", Kind::Timestamp, false),
    column("last_ts", Kind::Timestamp, false),
    column("processed_at", Kind::Timestamp, false),
    column("content_sha256", Kind::Text, false),
];

/// The Delta schema of a table.
pub fn delta_fields(columns: &[Column]) -> Vec<StructField> {
    columns
        .iter()
        .map(|c| {
            let primitive = match c.kind {
                Kind::Long => PrimitiveType::Long,
                Kind::Int => PrimitiveType::Integer,
                Kind::Double => PrimitiveType::Double,
                Kind::Text => PrimitiveType::String,
                Kind::Timestamp => PrimitiveType::Timestamp,
                Kind::Date => PrimitiveType::Date,
            };
            StructField::new(c.name, DataType::Primitive(primitive), c.nullable)
        })
        .collect()
}

/// The Arrow schema of a table's batches.
pub fn arrow_schema(columns: &[Column]) -> Arc<Schema> {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| {
                let kind = match c.kind {
                    Kind::Long => ArrowType::Int64,
                    Kind::Int => ArrowType::Int32,
                    Kind::Double => ArrowType::Float64,
                    Kind::Text => ArrowType::Utf8,
                    Kind::Timestamp => {
                        ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
                    }
                    Kind::Date => ArrowType::Date32,
                };
                Field::new(c.name, kind, c.nullable)
            })
            .collect::<Vec<_>>(),
    ))
}

/// A builder for one column of PostgreSQL rows: the ledger tables are copied row by row.
pub enum RowColumn {
    /// Int64 values.
    Long(Int64Builder),
    /// Int32 values.
    Int(Int32Builder),
    /// Float64 values.
    Double(Float64Builder),
    /// Strings.
    Text(StringBuilder),
    /// Timestamps, µs UTC.
    Timestamp(TimestampMicrosecondBuilder),
    /// Dates.
    Date(Date32Builder),
}

impl RowColumn {
    /// An empty builder for `column`.
    pub fn new(column: &Column) -> RowColumn {
        match column.kind {
            Kind::Long => RowColumn::Long(Int64Builder::new()),
            Kind::Int => RowColumn::Int(Int32Builder::new()),
            Kind::Double => RowColumn::Double(Float64Builder::new()),
            Kind::Text => RowColumn::Text(StringBuilder::new()),
            Kind::Date => RowColumn::Date(Date32Builder::new()),
            Kind::Timestamp => {
                RowColumn::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
        }
    }

    /// Appends the value of column `index` of `row`.
    ///
    /// # Errors
    /// The row's column has another type.
    pub fn append(
        &mut self,
        row: &tokio_postgres::Row,
        index: usize,
    ) -> Result<(), tokio_postgres::Error> {
        match self {
            RowColumn::Long(b) => b.append_option(row.try_get::<_, Option<i64>>(index)?),
            RowColumn::Int(b) => b.append_option(row.try_get::<_, Option<i32>>(index)?),
            RowColumn::Double(b) => b.append_option(row.try_get::<_, Option<f64>>(index)?),
            RowColumn::Text(b) => b.append_option(row.try_get::<_, Option<&str>>(index)?),
            RowColumn::Timestamp(b) => b.append_option(
                row.try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(index)?
                    .map(|t| t.timestamp_micros()),
            ),
            RowColumn::Date(b) => b.append_option(
                row.try_get::<_, Option<chrono::NaiveDate>>(index)?
                    .map(days_since_epoch),
            ),
        }
        Ok(())
    }

    /// The finished array.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            RowColumn::Long(b) => Arc::new(b.finish()),
            RowColumn::Int(b) => Arc::new(b.finish()),
            RowColumn::Double(b) => Arc::new(b.finish()),
            RowColumn::Text(b) => Arc::new(b.finish()),
            RowColumn::Timestamp(b) => Arc::new(b.finish()),
            RowColumn::Date(b) => Arc::new(b.finish()),
        }
    }
}

/// A date as Arrow's Date32 counts it: days since 1970-01-01.
pub fn days_since_epoch(date: chrono::NaiveDate) -> i32 {
    let days = date - chrono::NaiveDate::default();
    i32::try_from(days.num_days()).unwrap_or(i32::MAX)
}
