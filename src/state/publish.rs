//! Publishing new parameters into a target's data page: the seqlock writer.

use crate::error::Result;
use crate::fake_clock::data_page::{OFF_GENERATION, Params, slot_offset};
use crate::target::mem::RemoteMemory;

/// Writes `params` into the inactive slot, then bumps the generation: readers see either the
/// old or the new parameters, never a mix, and a writer dying half-way changes nothing.
pub(crate) fn write_slot(
    mem: &RemoteMemory,
    data_addr: u64,
    generation: u64,
    params: &Params,
) -> Result<()> {
    let next = generation.wrapping_add(1);
    mem.write_data(
        data_addr + slot_offset(next) as u64,
        &params.encode_slot(),
        "write the new offsets",
    )?;
    mem.write_data(
        data_addr + OFF_GENERATION as u64,
        &next.to_le_bytes(),
        "publish the new offsets",
    )
}
