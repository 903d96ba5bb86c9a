// The migrations are embedded at compile time (refinery's embed_migrations!),
// which reads each file but cannot tell cargo about a file added to the
// folder: without this, a new migration is left out until src/ changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
