;; The fused f32-arithmetic W8A16 row quantizer (spec §1.1/§1.2) on WebAssembly SIMD: decode F16/BF16/F32
;; rows, min/max with the non-finite check, scale/offset, int8 codes, per-row error sums. Not here:
;; argument checks, fp16/bf16 arithmetic, locating a bad element, SQNR in dB (all in ../fused.ts).
;; Assembled by tools/wasm/assemble.mjs into quantize-wasm.ts (a test rebuilds and compares the bytes).
;;
;; Why it is bit-exact with quantizeRows (f32 compute): every f32/f32x4 add, sub, mul, div result is the
;; correctly rounded float32 result, i.e. Math.fround of the exact double op, and the ops run in the
;; order of spec §1.4; rounding to an integer is round-half-to-even (pass 2). Min/max never see a NaN
;; (non-finite rows are flagged from the exponent bits and never quantized).
;;
;; Speed notes (V8/TurboFan on x64): a v128.const is re-created in every loop iteration (three
;; instructions) and v128.loads are not shared, but an f32x4.splat of a parameter is one instruction,
;; shared within an iteration; so the loops take their constants as f32 parameters (bit patterns via
;; f32.reinterpret_i32 in quantize_rows) and splat them.
;;
;; Memory is laid out by the JS caller: src rows back to back, readable 64 bytes past the end;
;; q (rows*cols codes, writable 16 bytes past the end: a row's last 16-byte store spills into the next
;; row, which then overwrites it); scale, offset (f32 per row); sums (3 f64 per row: max |w - deq|,
;; sum w^2, sum (w - deq)^2); scratch (one decoded row, 16-byte aligned, ceil16(cols) floats).

(module
  (memory (export "memory") 1)

  ;; ---------------------------------------------------------------------------------------------
  ;; Pass 1: decode one row of n elements into dst (f32, zero-padded to a multiple of 16) and return
  ;; [min(row, 0), max(row, 0), any non-finite]. 16 elements per step; lanes past the row end are
  ;; zeroed before decoding: 0 is neutral for min/max (the range includes 0 anyway) and gives 0 error
  ;; in pass 2.
  ;;
  ;; F16/BF16 min/max run on the raw sign-magnitude halves, 8 lanes at once: among non-negative halves
  ;; the signed i16 order is the value order and every negative half is below them, so a signed max
  ;; started at 0 is max(row, 0); among negative halves the unsigned order is the magnitude order and
  ;; every non-negative half is below 0x8000, so an unsigned max started at 0x8000 (-0) is the most
  ;; negative half, or -0 = min(row, 0) up to the sign of zero (harmless: -mn and mx - mn are the same).
  ;;
  ;; F16 decode: duplicate each half into both halves of an i32 (h | h << 16), shift right arithmetic
  ;; by 3 and keep the sign and bits 27..13 (keep = 0x8fffe000): that is an f32 with the half's exponent
  ;; and mantissa bits under a bias 112 too large, so multiplying by 2^112 gives the exact value,
  ;; subnormals included (an f32 subnormal times 2^112 is exact; wasm never flushes subnormals).
  ;; Inf/NaN would come out finite: they are flagged from the exponent bits (exp = 0x7c00 per lane).
  ;; BF16 decode: the upper copy of the duplicated half (keep = 0xffff0000) is the f32 itself.
  (func $pass1_f16 (param $src i32) (param $dst i32) (param $n i32) (param $exp f32) (param $keep f32) (param $p112 f32) (result f32 f32 i32)
    (local $i i32) (local $p i32) (local $a v128) (local $b v128)
    (local $mn v128) (local $mx v128) (local $bad v128)
    (local.set $mn (v128.const i16x8 0x8000 0x8000 0x8000 0x8000 0x8000 0x8000 0x8000 0x8000))
    (block $done
      (loop $next
        (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
        (local.set $p (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1))))
        (local.set $a (v128.load align=1 (local.get $p)))
        (local.set $b (v128.load offset=16 align=1 (local.get $p)))
        (if (i32.gt_s (i32.add (local.get $i) (i32.const 16)) (local.get $n))
          (then
            (local.set $a
              (v128.and (local.get $a)
                (i16x8.gt_s (i16x8.splat (i32.sub (local.get $n) (local.get $i))) (v128.const i16x8 0 1 2 3 4 5 6 7))))
            (local.set $b
              (v128.and (local.get $b)
                (i16x8.gt_s (i16x8.splat (i32.sub (local.get $n) (local.get $i))) (v128.const i16x8 8 9 10 11 12 13 14 15))))))
        (local.set $bad
          (v128.or (local.get $bad)
            (v128.or (i16x8.eq (v128.and (local.get $a) (f32x4.splat (local.get $exp))) (f32x4.splat (local.get $exp)))
                     (i16x8.eq (v128.and (local.get $b) (f32x4.splat (local.get $exp))) (f32x4.splat (local.get $exp))))))
        (local.set $mx (i16x8.max_s (local.get $mx) (i16x8.max_s (local.get $a) (local.get $b))))
        (local.set $mn (i16x8.max_u (local.get $mn) (i16x8.max_u (local.get $a) (local.get $b))))
        (local.set $p (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2))))
        (v128.store (local.get $p) (f32x4.mul (v128.and (i32x4.shr_s (i8x16.shuffle 0 1 0 1 2 3 2 3 4 5 4 5 6 7 6 7 (local.get $a) (local.get $a)) (i32.const 3)) (f32x4.splat (local.get $keep))) (f32x4.splat (local.get $p112))))
        (v128.store offset=16 (local.get $p) (f32x4.mul (v128.and (i32x4.shr_s (i8x16.shuffle 8 9 8 9 10 11 10 11 12 13 12 13 14 15 14 15 (local.get $a) (local.get $a)) (i32.const 3)) (f32x4.splat (local.get $keep))) (f32x4.splat (local.get $p112))))
        (v128.store offset=32 (local.get $p) (f32x4.mul (v128.and (i32x4.shr_s (i8x16.shuffle 0 1 0 1 2 3 2 3 4 5 4 5 6 7 6 7 (local.get $b) (local.get $b)) (i32.const 3)) (f32x4.splat (local.get $keep))) (f32x4.splat (local.get $p112))))
        (v128.store offset=48 (local.get $p) (f32x4.mul (v128.and (i32x4.shr_s (i8x16.shuffle 8 9 8 9 10 11 10 11 12 13 12 13 14 15 14 15 (local.get $b) (local.get $b)) (i32.const 3)) (f32x4.splat (local.get $keep))) (f32x4.splat (local.get $p112))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $next)))
    ;; Reduce the 8 lanes of each (halving), then decode lane 0.
    (local.set $mx (i16x8.max_s (local.get $mx) (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $mx) (local.get $mx))))
    (local.set $mx (i16x8.max_s (local.get $mx) (i8x16.shuffle 4 5 6 7 4 5 6 7 4 5 6 7 4 5 6 7 (local.get $mx) (local.get $mx))))
    (local.set $mx (i16x8.max_s (local.get $mx) (i8x16.shuffle 2 3 2 3 2 3 2 3 2 3 2 3 2 3 2 3 (local.get $mx) (local.get $mx))))
    (local.set $mn (i16x8.max_u (local.get $mn) (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $mn) (local.get $mn))))
    (local.set $mn (i16x8.max_u (local.get $mn) (i8x16.shuffle 4 5 6 7 4 5 6 7 4 5 6 7 4 5 6 7 (local.get $mn) (local.get $mn))))
    (local.set $mn (i16x8.max_u (local.get $mn) (i8x16.shuffle 2 3 2 3 2 3 2 3 2 3 2 3 2 3 2 3 (local.get $mn) (local.get $mn))))
    (f32x4.extract_lane 0 (f32x4.mul (v128.and (i32x4.shr_s (i8x16.shuffle 0 1 0 1 2 3 2 3 4 5 4 5 6 7 6 7 (local.get $mn) (local.get $mn)) (i32.const 3)) (f32x4.splat (local.get $keep))) (f32x4.splat (local.get $p112))))
    (f32x4.extract_lane 0 (f32x4.mul (v128.and (i32x4.shr_s (i8x16.shuffle 0 1 0 1 2 3 2 3 4 5 4 5 6 7 6 7 (local.get $mx) (local.get $mx)) (i32.const 3)) (f32x4.splat (local.get $keep))) (f32x4.splat (local.get $p112))))
    (v128.any_true (local.get $bad)))

  (func $pass1_bf16 (param $src i32) (param $dst i32) (param $n i32) (param $exp f32) (param $keep f32) (result f32 f32 i32)
    (local $i i32) (local $p i32) (local $a v128) (local $b v128)
    (local $mn v128) (local $mx v128) (local $bad v128)
    (local.set $mn (v128.const i16x8 0x8000 0x8000 0x8000 0x8000 0x8000 0x8000 0x8000 0x8000))
    (block $done
      (loop $next
        (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
        (local.set $p (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1))))
        (local.set $a (v128.load align=1 (local.get $p)))
        (local.set $b (v128.load offset=16 align=1 (local.get $p)))
        (if (i32.gt_s (i32.add (local.get $i) (i32.const 16)) (local.get $n))
          (then
            (local.set $a
              (v128.and (local.get $a)
                (i16x8.gt_s (i16x8.splat (i32.sub (local.get $n) (local.get $i))) (v128.const i16x8 0 1 2 3 4 5 6 7))))
            (local.set $b
              (v128.and (local.get $b)
                (i16x8.gt_s (i16x8.splat (i32.sub (local.get $n) (local.get $i))) (v128.const i16x8 8 9 10 11 12 13 14 15))))))
        (local.set $bad
          (v128.or (local.get $bad)
            (v128.or (i16x8.eq (v128.and (local.get $a) (f32x4.splat (local.get $exp))) (f32x4.splat (local.get $exp)))
                     (i16x8.eq (v128.and (local.get $b) (f32x4.splat (local.get $exp))) (f32x4.splat (local.get $exp))))))
        (local.set $mx (i16x8.max_s (local.get $mx) (i16x8.max_s (local.get $a) (local.get $b))))
        (local.set $mn (i16x8.max_u (local.get $mn) (i16x8.max_u (local.get $a) (local.get $b))))
        (local.set $p (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2))))
        (v128.store (local.get $p) (v128.and (i8x16.shuffle 0 1 0 1 2 3 2 3 4 5 4 5 6 7 6 7 (local.get $a) (local.get $a)) (f32x4.splat (local.get $keep))))
        (v128.store offset=16 (local.get $p) (v128.and (i8x16.shuffle 8 9 8 9 10 11 10 11 12 13 12 13 14 15 14 15 (local.get $a) (local.get $a)) (f32x4.splat (local.get $keep))))
        (v128.store offset=32 (local.get $p) (v128.and (i8x16.shuffle 0 1 0 1 2 3 2 3 4 5 4 5 6 7 6 7 (local.get $b) (local.get $b)) (f32x4.splat (local.get $keep))))
        (v128.store offset=48 (local.get $p) (v128.and (i8x16.shuffle 8 9 8 9 10 11 10 11 12 13 12 13 14 15 14 15 (local.get $b) (local.get $b)) (f32x4.splat (local.get $keep))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $next)))
    ;; Reduce the 8 lanes of each (halving), then decode lane 0.
    (local.set $mx (i16x8.max_s (local.get $mx) (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $mx) (local.get $mx))))
    (local.set $mx (i16x8.max_s (local.get $mx) (i8x16.shuffle 4 5 6 7 4 5 6 7 4 5 6 7 4 5 6 7 (local.get $mx) (local.get $mx))))
    (local.set $mx (i16x8.max_s (local.get $mx) (i8x16.shuffle 2 3 2 3 2 3 2 3 2 3 2 3 2 3 2 3 (local.get $mx) (local.get $mx))))
    (local.set $mn (i16x8.max_u (local.get $mn) (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $mn) (local.get $mn))))
    (local.set $mn (i16x8.max_u (local.get $mn) (i8x16.shuffle 4 5 6 7 4 5 6 7 4 5 6 7 4 5 6 7 (local.get $mn) (local.get $mn))))
    (local.set $mn (i16x8.max_u (local.get $mn) (i8x16.shuffle 2 3 2 3 2 3 2 3 2 3 2 3 2 3 2 3 (local.get $mn) (local.get $mn))))
    (f32x4.extract_lane 0 (v128.and (i8x16.shuffle 0 1 0 1 2 3 2 3 4 5 4 5 6 7 6 7 (local.get $mn) (local.get $mn)) (f32x4.splat (local.get $keep))))
    (f32x4.extract_lane 0 (v128.and (i8x16.shuffle 0 1 0 1 2 3 2 3 4 5 4 5 6 7 6 7 (local.get $mx) (local.get $mx)) (f32x4.splat (local.get $keep))))
    (v128.any_true (local.get $bad)))

  ;; F32: copied as is (16 elements per step), min/max with pmin/pmax (one instruction each; no NaN
  ;; reaches a used result); non-finite = exponent 0xff (exp = 0x7f800000 per lane).
  (func $pass1_f32 (param $src i32) (param $dst i32) (param $n i32) (param $exp f32) (result f32 f32 i32)
    (local $i i32) (local $p i32) (local $a v128) (local $b v128) (local $c v128) (local $d v128)
    (local $mn v128) (local $mx v128) (local $bad v128) (local $t v128)
    (block $done
      (loop $next
        (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
        (local.set $p (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2))))
        (local.set $a (v128.load align=1 (local.get $p)))
        (local.set $b (v128.load offset=16 align=1 (local.get $p)))
        (local.set $c (v128.load offset=32 align=1 (local.get $p)))
        (local.set $d (v128.load offset=48 align=1 (local.get $p)))
        (if (i32.gt_s (i32.add (local.get $i) (i32.const 16)) (local.get $n))
          (then
            (local.set $t (i32x4.splat (i32.sub (local.get $n) (local.get $i))))
            (local.set $a (v128.and (local.get $a) (i32x4.gt_s (local.get $t) (v128.const i32x4 0 1 2 3))))
            (local.set $b (v128.and (local.get $b) (i32x4.gt_s (local.get $t) (v128.const i32x4 4 5 6 7))))
            (local.set $c (v128.and (local.get $c) (i32x4.gt_s (local.get $t) (v128.const i32x4 8 9 10 11))))
            (local.set $d (v128.and (local.get $d) (i32x4.gt_s (local.get $t) (v128.const i32x4 12 13 14 15))))))
        (local.set $bad
          (v128.or (local.get $bad)
            (v128.or
              (v128.or (i32x4.eq (v128.and (local.get $a) (f32x4.splat (local.get $exp))) (f32x4.splat (local.get $exp)))
                       (i32x4.eq (v128.and (local.get $b) (f32x4.splat (local.get $exp))) (f32x4.splat (local.get $exp))))
              (v128.or (i32x4.eq (v128.and (local.get $c) (f32x4.splat (local.get $exp))) (f32x4.splat (local.get $exp)))
                       (i32x4.eq (v128.and (local.get $d) (f32x4.splat (local.get $exp))) (f32x4.splat (local.get $exp)))))))
        (local.set $p (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2))))
        (v128.store (local.get $p) (local.get $a))
        (v128.store offset=16 (local.get $p) (local.get $b))
        (v128.store offset=32 (local.get $p) (local.get $c))
        (v128.store offset=48 (local.get $p) (local.get $d))
        (local.set $mn (f32x4.pmin (local.get $mn) (f32x4.pmin (f32x4.pmin (local.get $a) (local.get $b)) (f32x4.pmin (local.get $c) (local.get $d)))))
        (local.set $mx (f32x4.pmax (local.get $mx) (f32x4.pmax (f32x4.pmax (local.get $a) (local.get $b)) (f32x4.pmax (local.get $c) (local.get $d)))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $next)))
    (f32.min (f32.min (f32x4.extract_lane 0 (local.get $mn)) (f32x4.extract_lane 1 (local.get $mn)))
             (f32.min (f32x4.extract_lane 2 (local.get $mn)) (f32x4.extract_lane 3 (local.get $mn))))
    (f32.max (f32.max (f32x4.extract_lane 0 (local.get $mx)) (f32x4.extract_lane 1 (local.get $mx)))
             (f32.max (f32x4.extract_lane 2 (local.get $mx)) (f32x4.extract_lane 3 (local.get $mx))))
    (v128.any_true (local.get $bad)))

  ;; ---------------------------------------------------------------------------------------------
  ;; Pass 2: codes of one decoded row, 16 per step. r = clamp(fl(fl(fl(x / s) + o) + m), lom, him) with
  ;; m = M = 1.5 * 2^23, lom = M + lo, him = M + 127: u = fl(fl(x / s) + o) is spec §1.4's f32 value
  ;; (|u| < 2^9: s comes from the row's own range); u + M lies in [2^23, 2^24), where the f32 grid is
  ;; the integers, so fl(u + M) = M + round-half-even(u) (one rounding of an exact sum), and clamping
  ;; M + v is M + clamp(v). The code is the bits of r minus the bits of M (one binade), and r - (M + o)
  ;; is the exact integer q - o. lo = -128 (asym) or -127 (sym, o = 0: adding +0 changes only -0 to
  ;; +0, the same code). Why not f32x4.nearest + i32x4.trunc_sat_f32x4_s: the saturating conversion
  ;; is five x64 instructions per vector, this is two.

  (func $pass2 (param $x i32) (param $q i32) (param $n i32)
    (param $s f32) (param $o f32) (param $m f32) (param $lom f32) (param $him f32)
    (local $i i32) (local $p i32) (local $r0 v128) (local $r1 v128) (local $r2 v128) (local $r3 v128)
    (block $done
      (loop $next
        (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
        (local.set $p (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 2))))
        (local.set $r0 (f32x4.pmin (f32x4.pmax (f32x4.add (f32x4.add (f32x4.div (v128.load (local.get $p)) (f32x4.splat (local.get $s))) (f32x4.splat (local.get $o))) (f32x4.splat (local.get $m))) (f32x4.splat (local.get $lom))) (f32x4.splat (local.get $him))))
        (local.set $r1 (f32x4.pmin (f32x4.pmax (f32x4.add (f32x4.add (f32x4.div (v128.load offset=16 (local.get $p)) (f32x4.splat (local.get $s))) (f32x4.splat (local.get $o))) (f32x4.splat (local.get $m))) (f32x4.splat (local.get $lom))) (f32x4.splat (local.get $him))))
        (local.set $r2 (f32x4.pmin (f32x4.pmax (f32x4.add (f32x4.add (f32x4.div (v128.load offset=32 (local.get $p)) (f32x4.splat (local.get $s))) (f32x4.splat (local.get $o))) (f32x4.splat (local.get $m))) (f32x4.splat (local.get $lom))) (f32x4.splat (local.get $him))))
        (local.set $r3 (f32x4.pmin (f32x4.pmax (f32x4.add (f32x4.add (f32x4.div (v128.load offset=48 (local.get $p)) (f32x4.splat (local.get $s))) (f32x4.splat (local.get $o))) (f32x4.splat (local.get $m))) (f32x4.splat (local.get $lom))) (f32x4.splat (local.get $him))))
        (v128.store align=1 (i32.add (local.get $q) (local.get $i))
          (i8x16.narrow_i16x8_s
            (i16x8.narrow_i32x4_s (i32x4.sub (local.get $r0) (f32x4.splat (local.get $m))) (i32x4.sub (local.get $r1) (f32x4.splat (local.get $m))))
            (i16x8.narrow_i32x4_s (i32x4.sub (local.get $r2) (f32x4.splat (local.get $m))) (i32x4.sub (local.get $r3) (f32x4.splat (local.get $m))))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $next))))

  ;; Pass 2 with the error terms of quantErrorStats, for F16/BF16 sources: deq = fl((q - o) * s) (the
  ;; float32 product of dequantizeRows), e = x - deq, max |e| (from max e and min e), sum x^2, sum e^2.
  ;; e is exact in f32, hence equal to JS's f64 difference, and so is max |e|. If q = o, deq = 0 and
  ;; e = x. Otherwise |x| > s/4 (u rounds away from o only if |x/s| is about 1/2 or more) and
  ;; |e| < 0.51 s (half a step plus f32 rounding; clamping happens only within that, as s covers the
  ;; row's range). With U = 2^(E(s) - 23) (E = binary exponent): deq >= s is a multiple of U, and x,
  ;; with at most 11 significant bits and E(x) >= E(s) - 2, is a multiple of 2^(E(s) - 12), so e is a
  ;; multiple of U below 2^(E(s) + 1) = 2^24 U: at most 24 significant bits. (F32 x: not so, see below.)
  ;; The sums: per lane, f32 partial sums of 4 terms (x^2 is exact for an 11-bit x, e^2 is
  ;; rounded once, then two levels of pairwise adds) added up in f64: within FUSED_SUM_REL_TOL of the
  ;; exact sums (../fused.ts) while no term under- or overflows f32; the caller recomputes the rare
  ;; rows where that may not hold (tiny or huge sums) exactly in JS. Half the cost of f64 terms.
  (func $pass2_stats_h (param $x i32) (param $q i32) (param $n i32) (param $out i32)
    (param $s f32) (param $o f32) (param $m f32) (param $lom f32) (param $him f32) (param $mo f32)
    (local $i i32) (local $p i32)
    (local $x0 v128) (local $x1 v128) (local $x2 v128) (local $x3 v128)
    (local $r0 v128) (local $r1 v128) (local $r2 v128) (local $r3 v128)
    (local $e0 v128) (local $e1 v128) (local $e2 v128) (local $e3 v128) (local $bx v128) (local $be v128)
    (local $emx v128) (local $emn v128) (local $mx v128) (local $sig v128) (local $noi v128)
    (block $done
      (loop $next
        (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
        (local.set $p (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 2))))
        (local.set $x0 (v128.load offset=0 (local.get $p)))
        (local.set $r0 (f32x4.pmin (f32x4.pmax (f32x4.add (f32x4.add (f32x4.div (local.get $x0) (f32x4.splat (local.get $s))) (f32x4.splat (local.get $o))) (f32x4.splat (local.get $m))) (f32x4.splat (local.get $lom))) (f32x4.splat (local.get $him))))
        (local.set $e0 (f32x4.sub (local.get $x0) (f32x4.mul (f32x4.sub (local.get $r0) (f32x4.splat (local.get $mo))) (f32x4.splat (local.get $s)))))
        (local.set $x1 (v128.load offset=16 (local.get $p)))
        (local.set $r1 (f32x4.pmin (f32x4.pmax (f32x4.add (f32x4.add (f32x4.div (local.get $x1) (f32x4.splat (local.get $s))) (f32x4.splat (local.get $o))) (f32x4.splat (local.get $m))) (f32x4.splat (local.get $lom))) (f32x4.splat (local.get $him))))
        (local.set $e1 (f32x4.sub (local.get $x1) (f32x4.mul (f32x4.sub (local.get $r1) (f32x4.splat (local.get $mo))) (f32x4.splat (local.get $s)))))
        (local.set $x2 (v128.load offset=32 (local.get $p)))
        (local.set $r2 (f32x4.pmin (f32x4.pmax (f32x4.add (f32x4.add (f32x4.div (local.get $x2) (f32x4.splat (local.get $s))) (f32x4.splat (local.get $o))) (f32x4.splat (local.get $m))) (f32x4.splat (local.get $lom))) (f32x4.splat (local.get $him))))
        (local.set $e2 (f32x4.sub (local.get $x2) (f32x4.mul (f32x4.sub (local.get $r2) (f32x4.splat (local.get $mo))) (f32x4.splat (local.get $s)))))
        (local.set $x3 (v128.load offset=48 (local.get $p)))
        (local.set $r3 (f32x4.pmin (f32x4.pmax (f32x4.add (f32x4.add (f32x4.div (local.get $x3) (f32x4.splat (local.get $s))) (f32x4.splat (local.get $o))) (f32x4.splat (local.get $m))) (f32x4.splat (local.get $lom))) (f32x4.splat (local.get $him))))
        (local.set $e3 (f32x4.sub (local.get $x3) (f32x4.mul (f32x4.sub (local.get $r3) (f32x4.splat (local.get $mo))) (f32x4.splat (local.get $s)))))
        (v128.store align=1 (i32.add (local.get $q) (local.get $i))
          (i8x16.narrow_i16x8_s
            (i16x8.narrow_i32x4_s (i32x4.sub (local.get $r0) (f32x4.splat (local.get $m))) (i32x4.sub (local.get $r1) (f32x4.splat (local.get $m))))
            (i16x8.narrow_i32x4_s (i32x4.sub (local.get $r2) (f32x4.splat (local.get $m))) (i32x4.sub (local.get $r3) (f32x4.splat (local.get $m))))))
        (local.set $emx (f32x4.pmax (local.get $emx) (f32x4.pmax (f32x4.pmax (local.get $e0) (local.get $e1)) (f32x4.pmax (local.get $e2) (local.get $e3)))))
        (local.set $emn (f32x4.pmin (local.get $emn) (f32x4.pmin (f32x4.pmin (local.get $e0) (local.get $e1)) (f32x4.pmin (local.get $e2) (local.get $e3)))))
        (local.set $bx (f32x4.add (f32x4.add (f32x4.mul (local.get $x0) (local.get $x0)) (f32x4.mul (local.get $x1) (local.get $x1)))
                                  (f32x4.add (f32x4.mul (local.get $x2) (local.get $x2)) (f32x4.mul (local.get $x3) (local.get $x3)))))
        (local.set $be (f32x4.add (f32x4.add (f32x4.mul (local.get $e0) (local.get $e0)) (f32x4.mul (local.get $e1) (local.get $e1)))
                                  (f32x4.add (f32x4.mul (local.get $e2) (local.get $e2)) (f32x4.mul (local.get $e3) (local.get $e3)))))
        (local.set $sig (f64x2.add (local.get $sig) (f64x2.add (f64x2.promote_low_f32x4 (local.get $bx))
                                                              (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $bx) (local.get $bx))))))
        (local.set $noi (f64x2.add (local.get $noi) (f64x2.add (f64x2.promote_low_f32x4 (local.get $be))
                                                              (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $be) (local.get $be))))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $next)))
    (local.set $mx (f32x4.pmax (local.get $emx) (f32x4.neg (local.get $emn))))
    (f64.store (local.get $out) (f64.promote_f32 (f32.max (f32.max (f32x4.extract_lane 0 (local.get $mx)) (f32x4.extract_lane 1 (local.get $mx)))
                                                       (f32.max (f32x4.extract_lane 2 (local.get $mx)) (f32x4.extract_lane 3 (local.get $mx))))))
    (f64.store offset=8 (local.get $out) (f64.add (f64x2.extract_lane 0 (local.get $sig)) (f64x2.extract_lane 1 (local.get $sig))))
    (f64.store offset=16 (local.get $out) (f64.add (f64x2.extract_lane 0 (local.get $noi)) (f64x2.extract_lane 1 (local.get $noi)))))

  ;; Pass 2 with the error sums, for F32 sources: x has 24 significant bits, so x - deq need not be exact
  ;; in f32 (x just below s/2, deq = s); e = x - deq is taken in f64 from the promoted values, as JS does.
  (func $pass2_stats_f (param $x i32) (param $q i32) (param $n i32) (param $out i32)
    (param $s f32) (param $o f32) (param $m f32) (param $lom f32) (param $him f32) (param $mo f32)
    (local $i i32) (local $p i32) (local $xv v128) (local $r v128) (local $c01 v128) (local $c23 v128) (local $c v128)
    (local $e v128) (local $el v128) (local $eh v128) (local $wl v128) (local $wh v128)
    (local $mx v128) (local $sig v128) (local $noi v128)
    (block $done
      (loop $next
        (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
        (local.set $p (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 2))))
        ;; lanes 0..3
        (local.set $xv (v128.load offset=0 (local.get $p)))
        (local.set $r (f32x4.pmin (f32x4.pmax (f32x4.add (f32x4.add (f32x4.div (local.get $xv) (f32x4.splat (local.get $s))) (f32x4.splat (local.get $o))) (f32x4.splat (local.get $m))) (f32x4.splat (local.get $lom))) (f32x4.splat (local.get $him))))
        (local.set $c (i32x4.sub (local.get $r) (f32x4.splat (local.get $m))))
        (local.set $c01 (local.get $c))
        (local.set $e (f32x4.mul (f32x4.sub (local.get $r) (f32x4.splat (local.get $mo))) (f32x4.splat (local.get $s))))
        (local.set $wl (f64x2.promote_low_f32x4 (local.get $xv)))
        (local.set $wh (f64x2.promote_low_f32x4 (v128.load64_zero offset=8 (local.get $p))))
        (local.set $el (f64x2.sub (local.get $wl) (f64x2.promote_low_f32x4 (local.get $e))))
        (local.set $eh (f64x2.sub (local.get $wh) (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $e) (local.get $e)))))
        (local.set $mx (f64x2.pmax (local.get $mx) (f64x2.pmax (f64x2.abs (local.get $el)) (f64x2.abs (local.get $eh)))))
        (local.set $sig (f64x2.add (local.get $sig) (f64x2.add (f64x2.mul (local.get $wl) (local.get $wl)) (f64x2.mul (local.get $wh) (local.get $wh)))))
        (local.set $noi (f64x2.add (local.get $noi) (f64x2.add (f64x2.mul (local.get $el) (local.get $el)) (f64x2.mul (local.get $eh) (local.get $eh)))))
        ;; lanes 4..7
        (local.set $xv (v128.load offset=16 (local.get $p)))
        (local.set $r (f32x4.pmin (f32x4.pmax (f32x4.add (f32x4.add (f32x4.div (local.get $xv) (f32x4.splat (local.get $s))) (f32x4.splat (local.get $o))) (f32x4.splat (local.get $m))) (f32x4.splat (local.get $lom))) (f32x4.splat (local.get $him))))
        (local.set $c (i32x4.sub (local.get $r) (f32x4.splat (local.get $m))))
        (local.set $c01 (i16x8.narrow_i32x4_s (local.get $c01) (local.get $c)))
        (local.set $e (f32x4.mul (f32x4.sub (local.get $r) (f32x4.splat (local.get $mo))) (f32x4.splat (local.get $s))))
        (local.set $wl (f64x2.promote_low_f32x4 (local.get $xv)))
        (local.set $wh (f64x2.promote_low_f32x4 (v128.load64_zero offset=24 (local.get $p))))
        (local.set $el (f64x2.sub (local.get $wl) (f64x2.promote_low_f32x4 (local.get $e))))
        (local.set $eh (f64x2.sub (local.get $wh) (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $e) (local.get $e)))))
        (local.set $mx (f64x2.pmax (local.get $mx) (f64x2.pmax (f64x2.abs (local.get $el)) (f64x2.abs (local.get $eh)))))
        (local.set $sig (f64x2.add (local.get $sig) (f64x2.add (f64x2.mul (local.get $wl) (local.get $wl)) (f64x2.mul (local.get $wh) (local.get $wh)))))
        (local.set $noi (f64x2.add (local.get $noi) (f64x2.add (f64x2.mul (local.get $el) (local.get $el)) (f64x2.mul (local.get $eh) (local.get $eh)))))
        ;; lanes 8..11
        (local.set $xv (v128.load offset=32 (local.get $p)))
        (local.set $r (f32x4.pmin (f32x4.pmax (f32x4.add (f32x4.add (f32x4.div (local.get $xv) (f32x4.splat (local.get $s))) (f32x4.splat (local.get $o))) (f32x4.splat (local.get $m))) (f32x4.splat (local.get $lom))) (f32x4.splat (local.get $him))))
        (local.set $c (i32x4.sub (local.get $r) (f32x4.splat (local.get $m))))
        (local.set $c23 (local.get $c))
        (local.set $e (f32x4.mul (f32x4.sub (local.get $r) (f32x4.splat (local.get $mo))) (f32x4.splat (local.get $s))))
        (local.set $wl (f64x2.promote_low_f32x4 (local.get $xv)))
        (local.set $wh (f64x2.promote_low_f32x4 (v128.load64_zero offset=40 (local.get $p))))
        (local.set $el (f64x2.sub (local.get $wl) (f64x2.promote_low_f32x4 (local.get $e))))
        (local.set $eh (f64x2.sub (local.get $wh) (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $e) (local.get $e)))))
        (local.set $mx (f64x2.pmax (local.get $mx) (f64x2.pmax (f64x2.abs (local.get $el)) (f64x2.abs (local.get $eh)))))
        (local.set $sig (f64x2.add (local.get $sig) (f64x2.add (f64x2.mul (local.get $wl) (local.get $wl)) (f64x2.mul (local.get $wh) (local.get $wh)))))
        (local.set $noi (f64x2.add (local.get $noi) (f64x2.add (f64x2.mul (local.get $el) (local.get $el)) (f64x2.mul (local.get $eh) (local.get $eh)))))
        ;; lanes 12..15
        (local.set $xv (v128.load offset=48 (local.get $p)))
        (local.set $r (f32x4.pmin (f32x4.pmax (f32x4.add (f32x4.add (f32x4.div (local.get $xv) (f32x4.splat (local.get $s))) (f32x4.splat (local.get $o))) (f32x4.splat (local.get $m))) (f32x4.splat (local.get $lom))) (f32x4.splat (local.get $him))))
        (local.set $c (i32x4.sub (local.get $r) (f32x4.splat (local.get $m))))
        (local.set $c23 (i16x8.narrow_i32x4_s (local.get $c23) (local.get $c)))
        (local.set $e (f32x4.mul (f32x4.sub (local.get $r) (f32x4.splat (local.get $mo))) (f32x4.splat (local.get $s))))
        (local.set $wl (f64x2.promote_low_f32x4 (local.get $xv)))
        (local.set $wh (f64x2.promote_low_f32x4 (v128.load64_zero offset=56 (local.get $p))))
        (local.set $el (f64x2.sub (local.get $wl) (f64x2.promote_low_f32x4 (local.get $e))))
        (local.set $eh (f64x2.sub (local.get $wh) (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $e) (local.get $e)))))
        (local.set $mx (f64x2.pmax (local.get $mx) (f64x2.pmax (f64x2.abs (local.get $el)) (f64x2.abs (local.get $eh)))))
        (local.set $sig (f64x2.add (local.get $sig) (f64x2.add (f64x2.mul (local.get $wl) (local.get $wl)) (f64x2.mul (local.get $wh) (local.get $wh)))))
        (local.set $noi (f64x2.add (local.get $noi) (f64x2.add (f64x2.mul (local.get $el) (local.get $el)) (f64x2.mul (local.get $eh) (local.get $eh)))))
        (v128.store align=1 (i32.add (local.get $q) (local.get $i)) (i8x16.narrow_i16x8_s (local.get $c01) (local.get $c23)))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $next)))
    (f64.store (local.get $out) (f64.max (f64x2.extract_lane 0 (local.get $mx)) (f64x2.extract_lane 1 (local.get $mx))))
    (f64.store offset=8 (local.get $out) (f64.add (f64x2.extract_lane 0 (local.get $sig)) (f64x2.extract_lane 1 (local.get $sig))))
    (f64.store offset=16 (local.get $out) (f64.add (f64x2.extract_lane 0 (local.get $noi)) (f64x2.extract_lane 1 (local.get $noi)))))

  ;; ---------------------------------------------------------------------------------------------
  ;; All rows: returns -1, or the first row holding a non-finite weight (rows before it are done).
  ;; dtype: 0 = F32, 1 = F16, 2 = BF16. sym: 0 = asym, 1 = sym. stats: 0 = codes only, 1 = also sums.
  (func $quantize_rows (export "quantize_rows")
    (param $src i32) (param $q i32) (param $scale i32) (param $offset i32) (param $sums i32) (param $scratch i32)
    (param $rows i32) (param $cols i32) (param $dtype i32) (param $sym i32) (param $stats i32)
    (result i32)
    (local $r i32) (local $rowBytes i32) (local $rsrc i32) (local $bad i32) (local $qrow i32) (local $out i32)
    (local $mn f32) (local $mx f32) (local $s f32) (local $o f32) (local $lo f32)
    (local.set $rowBytes
      (i32.shl (local.get $cols) (if (result i32) (i32.eqz (local.get $dtype)) (then (i32.const 2)) (else (i32.const 1)))))
    (block $done
      (loop $row
        (br_if $done (i32.ge_s (local.get $r) (local.get $rows)))
        (local.set $rsrc (i32.add (local.get $src) (i32.mul (local.get $r) (local.get $rowBytes))))
        (if (i32.eq (local.get $dtype) (i32.const 1))
          (then
            (call $pass1_f16 (local.get $rsrc) (local.get $scratch) (local.get $cols)
              (f32.reinterpret_i32 (i32.const 0x7c007c00)) (f32.reinterpret_i32 (i32.const 0x8fffe000)) (f32.const 0x1p112))
            (local.set $bad) (local.set $mx) (local.set $mn))
          (else
            (if (i32.eq (local.get $dtype) (i32.const 2))
              (then
                (call $pass1_bf16 (local.get $rsrc) (local.get $scratch) (local.get $cols)
                  (f32.reinterpret_i32 (i32.const 0x7f807f80)) (f32.reinterpret_i32 (i32.const 0xffff0000)))
                (local.set $bad) (local.set $mx) (local.set $mn))
              (else
                (call $pass1_f32 (local.get $rsrc) (local.get $scratch) (local.get $cols) (f32.reinterpret_i32 (i32.const 0x7f800000)))
                (local.set $bad) (local.set $mx) (local.set $mn)))))
        (if (local.get $bad) (then (return (local.get $r))))
        ;; Spec §1.1/§1.2 in f32, eps = 2^-23. f32.max(s, eps) = (s > eps ? s : eps) for the non-NaN s here;
        ;; -mn is -1 * mn.
        (if (local.get $sym)
          (then
            (local.set $s (f32.max (f32.div (f32.max (f32.neg (local.get $mn)) (local.get $mx)) (f32.const 127))
                                   (f32.const 0x1p-23)))
            (local.set $o (f32.const 0))
            (local.set $lo (f32.const -127)))
          (else
            (local.set $s (f32.max (f32.div (f32.sub (local.get $mx) (local.get $mn)) (f32.const 255))
                                   (f32.const 0x1p-23)))
            (local.set $o (f32.add (f32.nearest (f32.div (f32.neg (local.get $mn)) (local.get $s))) (f32.const -128)))
            (local.set $lo (f32.const -128))))
        (f32.store (i32.add (local.get $scale) (i32.shl (local.get $r) (i32.const 2))) (local.get $s))
        (f32.store (i32.add (local.get $offset) (i32.shl (local.get $r) (i32.const 2))) (local.get $o))
        (local.set $qrow (i32.add (local.get $q) (i32.mul (local.get $r) (local.get $cols))))
        (local.set $out (i32.add (local.get $sums) (i32.mul (local.get $r) (i32.const 24))))
        ;; M = 12582912 = 1.5 * 2^23, M + 127 = 12583039; M + lo and M + o are exact (integers < 2^24).
        (if (i32.eqz (local.get $stats))
          (then
            (call $pass2 (local.get $scratch) (local.get $qrow) (local.get $cols) (local.get $s) (local.get $o)
              (f32.const 12582912) (f32.add (f32.const 12582912) (local.get $lo)) (f32.const 12583039)))
          (else
            (if (i32.eqz (local.get $dtype))
              (then
                (call $pass2_stats_f (local.get $scratch) (local.get $qrow) (local.get $cols) (local.get $out)
                  (local.get $s) (local.get $o) (f32.const 12582912) (f32.add (f32.const 12582912) (local.get $lo))
                  (f32.const 12583039) (f32.add (f32.const 12582912) (local.get $o))))
              (else
                (call $pass2_stats_h (local.get $scratch) (local.get $qrow) (local.get $cols) (local.get $out)
                  (local.get $s) (local.get $o) (f32.const 12582912) (f32.add (f32.const 12582912) (local.get $lo))
                  (f32.const 12583039) (f32.add (f32.const 12582912) (local.get $o)))))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $row)))
    (i32.const -1)))
