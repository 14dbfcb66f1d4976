//! The push journal's writer thread: appends in groups, one sync a group. It takes every
//! append waiting at that moment, gives each its sequence number and receipt, writes them
//! together and syncs once; only then does any of them count as kept. A write or sync that
//! fails is cut off again and fails every append of the group; an append past the journal's
//! bound fails alone. A segment is closed past its size limit, or once everything in it is
//! loaded, and a new one started.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{mpsc, Arc};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::folder::open_segment;
use super::record::{self, Located, Meta};
use super::{io_error, segment_limit, JournalError, Segment, Shared, State, SYNC_GROUP_MAX};

/// A body to append, and where its receipt id (or why not) goes.
pub(super) struct Append {
    pub(super) meta: Meta,
    pub(super) body: Bytes,
    pub(super) reply: oneshot::Sender<Result<String, JournalError>>,
}

/// The segment appends go to.
pub(super) struct Current {
    pub(super) first: u64,
    pub(super) file: File,
    pub(super) len: u64,
}

impl Current {
    pub(super) fn create(dir: &Path, state: &mut State, first: u64) -> Result<Self, JournalError> {
        let path = dir.join(format!("{first:020}.seg"));
        let file = open_segment(&path, true)?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
        state.segments.insert(
            first,
            Segment {
                path,
                bytes: 0,
                live: 0,
                sealed: false,
            },
        );
        Ok(Self {
            first,
            file,
            len: 0,
        })
    }
}

/// The writer thread: appends in groups, one sync a group.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) current: Current,
    pub(super) next_sequence: u64,
}

impl Writer {
    pub(super) fn run(mut self, queue: mpsc::Receiver<Append>) {
        while let Ok(first) = queue.recv() {
            let mut group = vec![first];
            while group.len() < SYNC_GROUP_MAX {
                match queue.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            self.write_group(group);
        }
    }

    fn write_group(&mut self, group: Vec<Append>) {
        let limit = segment_limit(self.shared.max_bytes);
        let loaded_whole = {
            let state = self.shared.state();
            let live = state
                .segments
                .get(&self.current.first)
                .map_or(0, |s| s.live);
            live == 0 && (self.current.len >= limit / 8 || state.full)
        };
        if self.current.len > 0 && (self.current.len >= limit || loaded_whole) {
            if let Err(error) = self.rotate() {
                for append in group {
                    let _ = append.reply.send(Err(JournalError::Io {
                        path: self.shared.dir.display().to_string(),
                        source: io::Error::other(error.to_string()),
                    }));
                }
                return;
            }
        }
        let disk_bytes = self.shared.state().disk_bytes;
        let base = self.current.len;
        let mut buffer = Vec::new();
        let mut accepted = Vec::with_capacity(group.len());
        for mut append in group {
            let sequence = self.next_sequence;
            append.meta.receipt_id = format!("{}-{sequence}", self.shared.id);
            let encoded = match record::encode(sequence, &append.meta, &append.body) {
                Ok(encoded) => encoded,
                Err(error) => {
                    let _ = append.reply.send(Err(JournalError::Io {
                        path: self.shared.dir.display().to_string(),
                        source: io::Error::other(error),
                    }));
                    continue;
                }
            };
            let after = disk_bytes + buffer.len() as u64 + encoded.len() as u64;
            if after > self.shared.max_bytes {
                self.shared.state().full = true;
                let _ = append.reply.send(Err(JournalError::Full {
                    bytes: disk_bytes + buffer.len() as u64,
                    limit: self.shared.max_bytes,
                }));
                continue;
            }
            let located = Located {
                sequence,
                offset: base + buffer.len() as u64,
                len: encoded.len() as u32,
                meta: append.meta,
            };
            buffer.extend_from_slice(&encoded);
            accepted.push((located, append.reply));
            self.next_sequence += 1;
        }
        if accepted.is_empty() {
            return;
        }
        let written = self
            .current
            .file
            .write_all_at(&buffer, base)
            .and_then(|()| {
                crate::faults::point("journal::before-sync");
                self.current.file.sync_data()
            });
        if let Err(error) = written {
            // Nothing of the group is acknowledged; its bytes are cut off again.
            let _ = self.current.file.set_len(base);
            self.next_sequence -= accepted.len() as u64;
            tracing::warn!(
                message = "The push journal could not write; pushes get 503.",
                error = %error
            );
            let kind = error.kind();
            let text = error.to_string();
            for (_, reply) in accepted {
                let _ = reply.send(Err(JournalError::Io {
                    path: self.shared.dir.display().to_string(),
                    source: io::Error::new(kind, text.clone()),
                }));
            }
            return;
        }
        self.current.len += buffer.len() as u64;
        {
            let mut state = self.shared.state();
            state.disk_bytes += buffer.len() as u64;
            let first = self.current.first;
            if let Some(segment) = state.segments.get_mut(&first) {
                segment.bytes += buffer.len() as u64;
                segment.live += accepted.len();
            }
            for (located, _) in &accepted {
                state.insert(first, located);
            }
            state.publish();
        }
        crate::faults::point("journal::after-sync");
        self.shared.wake.notify_one();
        for (located, reply) in accepted {
            let _ = reply.send(Ok(located.meta.receipt_id));
        }
    }

    fn rotate(&mut self) -> Result<(), JournalError> {
        let mut state = self.shared.state();
        let next = Current::create(&self.shared.dir, &mut state, self.next_sequence)?;
        if let Some(segment) = state.segments.get_mut(&self.current.first) {
            segment.sealed = true;
        }
        state.remove_finished_segments();
        self.current = next;
        Ok(())
    }
}
