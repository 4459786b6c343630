//! Reads and writes of packet bytes at fixed offsets, for both hooks the programs run at:
//! tc (an skb) and XDP (a bare frame). Straight into the linear data where the bytes lie
//! there (the usual case, and far cheaper than a helper call), through helpers where they
//! do not. Writes of IPv4 addresses keep the header checksum valid.

use aya_ebpf::{
    bindings::BPF_F_MARK_MANGLED_0,
    cty::c_void,
    helpers::{bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    programs::{TcContext, XdpContext},
};
use dataplane_common::csum;

use crate::parse::header_ptr;

const IP_CSUM_OFFSET: usize = 14 + 10;
/// `bpf_l4_csum_replace`'s flag bits for the size of the replaced field.
const CSUM_SIZE_MASK: u64 = 0xf;

/// A packet at one of the hooks.
pub trait Packet {
    /// Start and end of the linear data, for direct access.
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// The whole packet's length.
    fn len(&self) -> u32;
    /// The interface the packet arrived on.
    fn ifindex(&self) -> u32;
    /// The context as helpers that take it (bpf_fib_lookup, bpf_check_mtu) want it.
    fn raw(&self) -> *mut c_void;
    /// Copies out the `T` at `offset` through a helper, wherever it lies.
    fn load_bytes<T: Copy>(&self, offset: usize) -> Option<T>;
    /// Writes `value` at `offset` through a helper, wherever it lies.
    fn store_bytes<T: Copy>(&self, offset: usize, value: &T) -> Result<(), i64>;
    /// Makes the first `len` bytes linear when the packet has that many.
    fn make_linear(&self, len: u32);
    /// `bpf_l4_csum_replace`'s contract: updates the L4 checksum at `offset` for a field
    /// of `flags & 0xf` bytes that changed from `from` to `to` (as loaded from the packet,
    /// in host order of the bytes).
    fn l4_csum_replace(&self, offset: usize, from: u64, to: u64, flags: u64) -> Result<(), i64>;
}

impl Packet for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        TcContext::len(self)
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: reading a field of the context the kernel handed us.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.skb.skb.cast()
    }

    #[inline(always)]
    fn load_bytes<T: Copy>(&self, offset: usize) -> Option<T> {
        self.load(offset).ok()
    }

    #[inline(always)]
    fn store_bytes<T: Copy>(&self, offset: usize, value: &T) -> Result<(), i64> {
        self.store(offset, value, 0)
    }

    /// Frames from packet sockets (and GSO frames) may carry only the Ethernet header in
    /// the linear area.
    #[inline(always)]
    fn make_linear(&self, len: u32) {
        if TcContext::data_end(self) - TcContext::data(self) < len as usize && TcContext::len(self) >= len {
            let _ = self.pull_data(len);
        }
    }

    /// The helper knows the skb's checksum state (CHECKSUM_PARTIAL packets keep only the
    /// pseudo header's sum in the field), which the program cannot see.
    #[inline(always)]
    fn l4_csum_replace(&self, offset: usize, from: u64, to: u64, flags: u64) -> Result<(), i64> {
        TcContext::l4_csum_replace(self, offset, from, to, flags)
    }
}

impl Packet for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        (XdpContext::data_end(self) - XdpContext::data(self)) as u32
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.ingress_ifindex() as u32
    }

    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.ctx.cast()
    }

    #[inline(always)]
    fn load_bytes<T: Copy>(&self, offset: usize) -> Option<T> {
        let mut value = core::mem::MaybeUninit::<T>::uninit();
        // SAFETY: the helper writes exactly size_of::<T>() bytes into `value` or fails.
        let rc = unsafe {
            bpf_xdp_load_bytes(self.ctx, offset as u32, value.as_mut_ptr().cast(), size_of::<T>() as u32)
        };
        // SAFETY: on success every byte of `value` was written.
        (rc == 0).then(|| unsafe { value.assume_init() })
    }

    #[inline(always)]
    fn store_bytes<T: Copy>(&self, offset: usize, value: &T) -> Result<(), i64> {
        // SAFETY: the helper only reads size_of::<T>() bytes from `value`.
        let rc = unsafe {
            bpf_xdp_store_bytes(
                self.ctx,
                offset as u32,
                (value as *const T).cast_mut().cast(),
                size_of::<T>() as u32,
            )
        };
        if rc == 0 { Ok(()) } else { Err(rc) }
    }

    /// An XDP frame's headers are linear already.
    #[inline(always)]
    fn make_linear(&self, _len: u32) {}

    /// XDP frames come from the wire with complete checksums (the XDP hook passes
    /// CHECKSUM_PARTIAL ones on to tc), so the update is plain RFC 1624 arithmetic.
    #[inline(always)]
    fn l4_csum_replace(&self, offset: usize, from: u64, to: u64, flags: u64) -> Result<(), i64> {
        complete_l4_csum_replace(self, offset, from, to, flags)
    }
}

/// `Packet::l4_csum_replace` for a checksum field known to hold a complete checksum, in
/// software (RFC 1624) instead of a helper call.
#[inline(always)]
pub fn complete_l4_csum_replace(
    ctx: &impl Packet,
    offset: usize,
    from: u64,
    to: u64,
    flags: u64,
) -> Result<(), i64> {
    let old: u16 = read(ctx, offset).ok_or(-1i64)?;
    let optional = flags & u64::from(BPF_F_MARK_MANGLED_0) != 0;
    if optional && old == 0 {
        // A UDP datagram without a checksum keeps none.
        return Ok(());
    }
    let mut new = match flags & CSUM_SIZE_MASK {
        2 => csum::replace2(old, (from as u16).to_ne_bytes(), (to as u16).to_ne_bytes()),
        4 => csum::replace4(old, (from as u32).to_ne_bytes(), (to as u32).to_ne_bytes()),
        // `to` is a sum of the change (`bpf_csum_diff`'s), as the helper takes it.
        0 => csum::add_diff(old, to as u32),
        _ => return Err(-22),
    };
    if optional && new == 0 {
        // For UDP, 0 means "no checksum": the same sum is written as 0xffff.
        new = 0xffff;
    }
    write(ctx, offset, new)
}

/// The `T` at `offset`.
#[inline(always)]
pub fn read<T: Copy>(ctx: &impl Packet, offset: usize) -> Option<T> {
    match header_ptr::<T>(ctx, offset) {
        // SAFETY: header_ptr checked that the whole `T` lies inside the linear data.
        Some(ptr) => Some(unsafe { ptr.read_unaligned() }),
        None => ctx.load_bytes(offset),
    }
}

/// The `T` at `offset` if it lies in the linear data (no helper call).
#[inline(always)]
pub fn read_linear<T: Copy>(ctx: &impl Packet, offset: usize) -> Option<T> {
    // SAFETY: header_ptr checked that the whole `T` lies inside the linear data.
    header_ptr::<T>(ctx, offset).map(|ptr| unsafe { ptr.read_unaligned() })
}

/// Writes `value` at `offset`.
#[inline(always)]
pub fn write<T: Copy>(ctx: &impl Packet, offset: usize, value: T) -> Result<(), i64> {
    match header_ptr::<T>(ctx, offset) {
        // SAFETY: as in `read`; tc programs that write directly get a writable head (the
        // kernel unclones the skb before they run), and XDP frames are always writable.
        Some(ptr) => {
            unsafe { ptr.write_unaligned(value) };
            Ok(())
        }
        None => ctx.store_bytes(offset, &value),
    }
}

/// Replaces the IPv4 address at `offset` (source or destination), updating the header
/// checksum incrementally.
#[inline(always)]
pub fn set_ipv4_addr(ctx: &impl Packet, offset: usize, old: [u8; 4], new: [u8; 4]) -> Result<(), i64> {
    let checksum: u16 = read(ctx, IP_CSUM_OFFSET).ok_or(-1i64)?;
    write(ctx, IP_CSUM_OFFSET, csum::replace4(checksum, old, new))?;
    write(ctx, offset, new)
}
