//! AddressSanitizer's defaults for every target, read by its runtime at start-up: a 64 MiB
//! quarantine for freed memory instead of 256 MiB. With the default, a simulation-heavy target
//! reaches the 512 MB RSS limit on freed memory alone (sim_schedule: 523 MB after a minute on
//! a grown corpus, 197 MB with this setting; the input that "ran out of memory" after 58
//! minutes needs 7 MB on its own). The targets are safe Rust, so a shorter quarantine costs
//! little use-after-free detection.

/// Called by the AddressSanitizer runtime (a weak symbol there; this definition wins).
#[no_mangle]
pub extern "C" fn __asan_default_options() -> *const std::ffi::c_char {
    c"quarantine_size_mb=64".as_ptr()
}
