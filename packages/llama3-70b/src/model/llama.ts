// The LLaMA forward pass over a paged KV cache: several sequences packed into one step (prefill rows and decode
// rows alike), preallocated run state, one data path top to bottom. Weights come from load.ts; sampling and the
// generation loop live in generate/.

import type { AttentionBatch, Backend, KvCacheLayer, Tensor } from '@w8a16/ascend-runtime';
import { DEFAULT_BLOCK_SIZE, PagedKvCache, blocksForTokens } from '@w8a16/kvcache-int8';
import { CliError } from '../cli/errors';
import type { LlamaWeights } from './load';

/** Step shapes (sequences x rows) whose views are kept for reuse; decode needs one per batch size. */
const MAX_MEMO_STEP_SHAPES = 256;

export interface LlamaModelOptions {
  /** Most token rows one `forward` call may carry (the prefill chunk; decode uses one row per sequence). */
  maxTokensPerStep: number;
  /** Most sequences one `forward` call may carry. */
  maxSeqsPerStep: number;
  /** Longest sequence (prompt + generated) the cache must hold. */
  maxContext: number;
  /** Tokens per KV block (default 128, as run_pa). */
  blockSize?: number;
  /** Blocks in the pool (default: maxSeqsPerStep sequences of maxContext tokens). */
  numBlocks?: number;
  /** Flag quoted when blocks run out (default `--num_blocks`). */
  exhaustedHint?: string;
  /**
   * Tensor parallelism (weights loaded with a shard): sums a row-parallel linear's partial output `[T, hidden]` over
   * the ranks, in place; called after o_proj and after down_proj. Absent: the weights are whole, nothing to sum.
   */
  allReduce?: (partial: Tensor) => void;
}

/** Per-row-count views of the activation buffers and the host arrays of one step shape, made once and reused. */
interface StepState {
  // activations (T = token rows of the step, S = sequences)
  x: Tensor; // (T, hidden) residual stream
  xb: Tensor; // (T, hidden) normed input of a block
  xb2: Tensor; // (T, hidden) attention / MLP output before the residual add
  // nHeads, nKvHeads and intermediate are this rank's share under tensor parallelism (weights.shard)
  q: Tensor; // (T, nHeads·headDim)
  k: Tensor; // (T, nKvHeads·headDim)
  v: Tensor; // (T, nKvHeads·headDim)
  att: Tensor; // (T, nHeads·headDim) attention output
  hb: Tensor; // (T, intermediate) gate, then silu(gate)·up
  hb2: Tensor; // (T, intermediate) up
  last: Tensor; // (S, hidden) last row of each sequence
  logits: Tensor; // (S, vocab)
  // host arrays
  ids: Int32Array; // (T,) token ids
  slots: Int32Array; // (T,) cache slot each row's K/V goes to
  lastRows: Int32Array; // (S,) row index of each sequence's last token
  batch: AttentionBatch; // queryStart (S+1), positions (T), contextLens (S), blockTables (S, maxBlocksPerSeq)
}

export class LlamaModel {
  readonly weights: LlamaWeights;
  readonly backend: Backend;
  readonly cache: PagedKvCache;
  readonly maxTokensPerStep: number;
  readonly maxSeqsPerStep: number;
  readonly maxContext: number;
  private readonly maxBlocksPerSeq: number;
  private readonly kv: KvCacheLayer[]; // (nLayers) each K, V (numBlocks, blockSize, nKvHeads, headDim)
  private readonly base: Record<'x' | 'xb' | 'xb2' | 'q' | 'k' | 'v' | 'att' | 'hb' | 'hb2' | 'last' | 'logits', Tensor>;
  private readonly steps = new Map<number, StepState>();
  private allLogits: Tensor | undefined; // (T, vocab), only when every position's logits are asked for
  private readonly allReduce: ((partial: Tensor) => void) | undefined;

  constructor(weights: LlamaWeights, backend: Backend, options: LlamaModelOptions) {
    const c = weights.config;
    for (const [k, v] of Object.entries({ maxTokensPerStep: options.maxTokensPerStep, maxSeqsPerStep: options.maxSeqsPerStep, maxContext: options.maxContext })) {
      if (!Number.isSafeInteger(v) || v < 1) throw new CliError('E_ARGUMENT', `LlamaModel: ${k} must be a positive integer, found ${v}`);
    }
    this.weights = weights;
    this.backend = backend;
    this.maxTokensPerStep = options.maxTokensPerStep;
    this.maxSeqsPerStep = options.maxSeqsPerStep;
    this.maxContext = options.maxContext;
    this.allReduce = options.allReduce;
    const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
    this.maxBlocksPerSeq = blocksForTokens(options.maxContext, blockSize);
    const numBlocks = options.numBlocks ?? this.maxBlocksPerSeq * options.maxSeqsPerStep;
    const kvDType = weights.summary.kvCacheDType;
    this.cache = new PagedKvCache({ numBlocks, blockSize, dtype: kvDType, exhaustedHint: options.exhaustedHint ?? '--num_blocks' });

    const T = options.maxTokensPerStep;
    const S = options.maxSeqsPerStep;
    const nKvHeads = weights.shard?.nKvHeads ?? c.nKvHeads;
    const qDim = (weights.shard?.nHeads ?? c.nHeads) * c.headDim;
    const kvDim = nKvHeads * c.headDim;
    const intermediate = weights.shard?.intermediateSize ?? c.intermediateSize;
    const alloc = (rows: number, cols: number) => backend.alloc(rows, cols);
    this.base = {
      x: alloc(T, c.hiddenSize),
      xb: alloc(T, c.hiddenSize),
      xb2: alloc(T, c.hiddenSize),
      q: alloc(T, qDim),
      k: alloc(T, kvDim),
      v: alloc(T, kvDim),
      att: alloc(T, qDim),
      hb: alloc(T, intermediate),
      hb2: alloc(T, intermediate),
      last: alloc(S, c.hiddenSize),
      logits: alloc(S, c.vocabSize),
    };
    this.kv = weights.layers.map((L) =>
      backend.createKvCache({ numBlocks, blockSize, nKvHeads, headDim: c.headDim, dtype: kvDType, quant: L.kvQuant }),
    );
  }

  /**
   * One step: for each sequence `seqIds[s]`, the new tokens `tokens[queryStart[s] .. queryStart[s+1]-1]` (a whole
   * prompt, or one token while decoding) are appended to its cache and run through the model. Returns the logits
   * of each sequence's last new token, `[numSeqs, vocab]` (valid until the next call), or with `allPositions` the
   * logits of every new token `[T, vocab]`.
   */
  forward(seqIds: ArrayLike<number>, tokens: ArrayLike<number>, queryStart: ArrayLike<number>, allPositions = false): Tensor {
    const W = this.weights;
    const c = W.config;
    const be = this.backend;
    const st = this.forwardLayers(seqIds, tokens, queryStart);
    const x = st.x;

    // final norm
    be.rmsNorm(x, x, W.norm, c.rmsNormEps);
    if (allPositions) return this.logitsOfEveryRow(x, tokens.length);
    // last row of each sequence -> lm_head -> logits
    be.gatherRows(st.last, x, st.lastRows);
    be.linear(st.logits, st.last, W.lmHead);
    return st.logits;
  }

  /**
   * The cache bookkeeping, embedding and decoder layers of `forward`, without the final norm and lm_head: what a
   * tensor-parallel rank other than the driver runs (the driver alone picks tokens).
   */
  forwardLayers(seqIds: ArrayLike<number>, tokens: ArrayLike<number>, queryStart: ArrayLike<number>): { x: Tensor; last: Tensor; logits: Tensor; lastRows: Int32Array } {
    const W = this.weights;
    const c = W.config;
    const be = this.backend;
    const S = seqIds.length;
    const T = tokens.length;
    if (S < 1 || S > this.maxSeqsPerStep || T < S || T > this.maxTokensPerStep || queryStart.length !== S + 1 || queryStart[0] !== 0 || queryStart[S] !== T) {
      throw new CliError(
        'E_ARGUMENT',
        `forward: ${S} sequence(s), ${T} token(s), queryStart of ${queryStart.length}; expected 1..${this.maxSeqsPerStep} sequences, ` +
          `S..${this.maxTokensPerStep} tokens and queryStart running 0..T with S+1 entries`,
      );
    }
    const st = this.step(S, T);
    const { x, xb, xb2, q, k, v, att, hb, hb2, batch } = st;

    // kv bookkeeping: reserve the new positions of each sequence, their cache slots, the block tables
    for (let s = 0; s < S; s++) {
      const id = seqIds[s];
      const n = queryStart[s + 1] - queryStart[s];
      if (n < 1) throw new CliError('E_ARGUMENT', `forward: sequence ${id} has no new tokens`);
      const start = this.cache.has(id) ? this.cache.length(id) : 0;
      if (start + n > this.maxContext) {
        throw new CliError('E_CONTEXT_FULL', `sequence ${id}: ${start + n} tokens exceed the context of ${this.maxContext} this model was set up for`);
      }
      if (start === 0) this.cache.allocate(id, n);
      else this.cache.append(id, n);
      batch.queryStart[s + 1] = queryStart[s + 1];
      for (let i = 0; i < n; i++) batch.positions[queryStart[s] + i] = start + i;
      this.cache.slots(st.slots, queryStart[s], id, start, n);
      st.lastRows[s] = queryStart[s + 1] - 1;
    }
    this.cache.fillBlockTables(batch, seqIds);
    for (let t = 0; t < T; t++) st.ids[t] = tokens[t];

    // token embeddings
    be.embedding(x, W.embedding, st.ids);

    for (let l = 0; l < c.nLayers; l++) {
      const L = W.layers[l];
      // attention: rmsnorm -> q, k, v -> rope -> cache write -> paged causal attention over the cache -> o
      be.rmsNorm(xb, x, L.inputNorm, c.rmsNormEps);
      be.linear(q, xb, L.q);
      be.linear(k, xb, L.k);
      be.linear(v, xb, L.v);
      be.rope(q, k, batch.positions, W.rope);
      be.kvWrite(this.kv[l], k, v, st.slots);
      be.pagedAttention(att, q, this.kv[l], batch);
      be.linear(xb2, att, L.o);
      this.allReduce?.(xb2);
      // residual
      be.add(x, x, xb2);
      // mlp: rmsnorm -> gate, up -> silu(gate)·up -> down
      be.rmsNorm(xb, x, L.postNorm, c.rmsNormEps);
      be.linear(hb, xb, L.gate);
      be.linear(hb2, xb, L.up);
      be.siluMul(hb, hb, hb2);
      be.linear(xb2, hb, L.down);
      this.allReduce?.(xb2);
      // residual
      be.add(x, x, xb2);
    }
    return st;
  }

  /** Frees sequence `seqId`'s cache blocks (its K/V are not cleared; the slots are simply reused). */
  release(seqId: number): void {
    if (this.cache.has(seqId)) this.cache.release(seqId);
  }

  /** Frees every sequence. */
  reset(): void {
    this.cache.reset();
  }

  /** Host copy of one layer's K or V storage (tests). */
  readKvCache(layer: number, which: 'k' | 'v'): Float32Array | Uint16Array | Int8Array {
    return this.backend.readKvCache(this.kv[layer], which);
  }

  /** Releases the run state and KV cache (not the weights: `weights.free()`). */
  dispose(): void {
    const be = this.backend;
    for (const t of Object.values(this.base)) be.free(t);
    if (this.allLogits) be.free(this.allLogits);
    for (const c of this.kv) be.freeWeight(c);
    this.steps.clear();
  }

  private logitsOfEveryRow(x: Tensor, T: number): Tensor {
    const be = this.backend;
    if (!this.allLogits || this.allLogits.shape[0] < T) {
      if (this.allLogits) be.free(this.allLogits);
      this.allLogits = be.alloc(this.maxTokensPerStep, this.weights.config.vocabSize);
    }
    const out = be.view(this.allLogits, 0, T);
    be.linear(out, x, this.weights.lmHead);
    return out;
  }

  /** The views and arrays for a step of S sequences and T rows, created on first use. */
  private step(S: number, T: number): StepState {
    const key = S * (this.maxTokensPerStep + 1) + T;
    let st = this.steps.get(key);
    if (st) return st;
    // Ragged prefills make new shapes; decode reuses a few. Bound the memo so a long run cannot grow it forever.
    if (this.steps.size >= MAX_MEMO_STEP_SHAPES) this.steps.clear();
    const be = this.backend;
    const b = this.base;
    const rows = (t: Tensor, n: number) => be.view(t, 0, n);
    st = {
      x: rows(b.x, T),
      xb: rows(b.xb, T),
      xb2: rows(b.xb2, T),
      q: rows(b.q, T),
      k: rows(b.k, T),
      v: rows(b.v, T),
      att: rows(b.att, T),
      hb: rows(b.hb, T),
      hb2: rows(b.hb2, T),
      last: rows(b.last, S),
      logits: rows(b.logits, S),
      ids: new Int32Array(T),
      slots: new Int32Array(T),
      lastRows: new Int32Array(S),
      batch: {
        numSeqs: S,
        queryStart: new Int32Array(S + 1),
        positions: new Int32Array(T),
        contextLens: new Int32Array(S),
        blockTables: new Int32Array(S * this.maxBlocksPerSeq),
        maxBlocksPerSeq: this.maxBlocksPerSeq,
      },
    };
    this.steps.set(key, st);
    return st;
  }
}
