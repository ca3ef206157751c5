//! The `jmp rel32` codec: the 5-byte jump written over each vDSO entry, and how far it reaches.

/// Length of `jmp rel32` (`E9` + 4-byte displacement), the patch written over each entry.
pub(super) const JUMP_LEN: usize = 5;

/// Opcode of `jmp rel32`.
pub(super) const JMP_REL32: u8 = 0xE9;

/// How far a 32-bit displacement reaches from the end of its instruction: ±2 GiB. The same
/// limit binds the jump and the RIP-relative operands of relocated instructions.
pub(super) const REACH: u64 = 1 << 31;

/// `jmp rel32` at `from` reaching `to`, or `None` when `to` is beyond ±2 GiB.
pub(super) fn encode_jump(from: u64, to: u64) -> Option<Vec<u8>> {
    let next = from.checked_add(JUMP_LEN as u64)?;
    let rel = i32::try_from(i128::from(to) - i128::from(next)).ok()?;
    let mut jump = Vec::with_capacity(JUMP_LEN);
    jump.push(JMP_REL32);
    jump.extend_from_slice(&rel.to_le_bytes());
    Some(jump)
}

/// Target of the `jmp rel32` at the start of `bytes` (read at `from`), if there is one.
pub(super) fn decode_jump(bytes: &[u8], from: u64) -> Option<u64> {
    match bytes {
        [JMP_REL32, a, b, c, d, ..] => {
            let rel = i32::from_le_bytes([*a, *b, *c, *d]);
            Some(
                from.wrapping_add(JUMP_LEN as u64)
                    .wrapping_add_signed(i64::from(rel)),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use iced_x86::Code;

    use super::*;
    use crate::arch::x86_64::test_support::decode_all;

    #[test]
    fn jumps_encode_and_decode() {
        let from = 0x7f00_0000_1000u64;
        for to in [
            from,
            from + 5,
            from - 0x10_0000,
            from + 0x10_0000,
            from + 5 + i32::MAX as u64,
            from + 5 - (1u64 << 31),
        ] {
            let jump = encode_jump(from, to).unwrap_or_else(|| panic!("{to:#x}"));
            assert_eq!(jump.len(), JUMP_LEN);
            assert_eq!(jump[0], 0xe9);
            assert_eq!(decode_jump(&jump, from), Some(to));
            let instr = decode_all(&jump, from)[0];
            assert_eq!(instr.code(), Code::Jmp_rel32_64);
            assert_eq!(instr.near_branch_target(), to);
        }
        assert_eq!(encode_jump(from, from + 5 + i32::MAX as u64 + 1), None);
        assert_eq!(encode_jump(from, from + 4 - (1u64 << 31)), None);
        assert_eq!(encode_jump(0x1000, u64::MAX), None);
        assert_eq!(encode_jump(u64::MAX - 2, 0), None);
        assert_eq!(decode_jump(&[0xe9, 0, 0, 0], from), None);
        assert_eq!(decode_jump(&[0xe8, 0, 0, 0, 0], from), None);
        assert_eq!(decode_jump(&[0x55, 0x48, 0x89, 0xe5, 0x41], from), None);
        assert_eq!(decode_jump(&[], from), None);
        assert_eq!(
            decode_jump(&[0xe9, 0xfb, 0xff, 0xff, 0xff, 0x90], from),
            Some(from)
        );
    }
}
