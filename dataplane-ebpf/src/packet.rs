//! Reads and writes of packet bytes at fixed offsets: straight into the linear data where
//! the bytes lie there (the usual case, and far cheaper than a helper call), through the
//! skb helpers where they do not. Writes of IPv4 addresses keep the header checksum valid.

use aya_ebpf::programs::TcContext;
use dataplane_common::csum;

use crate::parse::header_ptr;

const IP_CSUM_OFFSET: usize = 14 + 10;

/// The `T` at `offset`.
#[inline(always)]
pub fn read<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    match header_ptr::<T>(ctx, offset) {
        // SAFETY: header_ptr checked that the whole `T` lies inside the linear data.
        Some(ptr) => Some(unsafe { ptr.read_unaligned() }),
        None => ctx.load(offset).ok(),
    }
}

/// Writes `value` at `offset`.
#[inline(always)]
pub fn write<T: Copy>(ctx: &TcContext, offset: usize, value: T) -> Result<(), i64> {
    match header_ptr::<T>(ctx, offset) {
        // SAFETY: as in `read`; tc programs that write directly get a writable head (the
        // kernel unclones the skb before they run).
        Some(ptr) => {
            unsafe { ptr.write_unaligned(value) };
            Ok(())
        }
        None => ctx.store(offset, &value, 0),
    }
}

/// Replaces the IPv4 address at `offset` (source or destination), updating the header
/// checksum incrementally.
#[inline(always)]
pub fn set_ipv4_addr(ctx: &TcContext, offset: usize, old: [u8; 4], new: [u8; 4]) -> Result<(), i64> {
    let checksum: u16 = read(ctx, IP_CSUM_OFFSET).ok_or(-1i64)?;
    write(ctx, IP_CSUM_OFFSET, csum::replace4(checksum, old, new))?;
    write(ctx, offset, new)
}
