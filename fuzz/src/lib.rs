//! The fuzz targets' library: the loader drivers and heap bounds (`loaders.rs`, shared with the
//! property tests) and [`loader_target!`], which makes a target binary of one driver.

mod loaders;

pub use loaders::*;

#[doc(hidden)]
pub use libfuzzer_sys;

/// A fuzz target binary for one loader: installs [`Counting`] and checks that `$driver(data)`
/// (which returns the peak heap bytes) stays within `$bound(data.len())`.
#[macro_export]
macro_rules! loader_target {
    ($driver:expr, $bound:expr) => {
        #[global_allocator]
        static ALLOCATOR: $crate::Counting = $crate::Counting;

        $crate::libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            let peak = $driver(data);
            assert!(peak <= $bound(data.len()), "{peak} heap bytes for {} input bytes", data.len());
        });
    };
}

