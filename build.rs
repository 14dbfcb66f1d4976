//! Rebuilds the crate when a migration is added, changed or removed: the migrations are
//! embedded at compile time, and a new file in `migrations/` changes no Rust source.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
