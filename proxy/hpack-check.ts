// HPACK (RFC 7541) read only as far as the HTTP/2 field check needs: each field's validity and the dynamic table's sizes.
import { HUFFMAN_CODES, HUFFMAN_LENGTHS, STATIC_NAME_LENGTHS } from './hpack-tables.js';

/** A header block this decoder cannot read. nghttp2 reads the same bytes and ends the session with COMPRESSION_ERROR. */
export class HpackError extends Error {}

/**
 * One dynamic-table entry. Only what later references need is kept, not the strings: an entry's size (§4.1), its
 * name's length (a literal may reuse the name), and whether its name, or the whole field, is one RFC 9113 forbids.
 */
interface Entry {
  readonly size: number;
  readonly nameLength: number;
  readonly nameBad: boolean;
  readonly bad: boolean;
}

/**
 * Field names nghttp2 accepts (its VALID_HD_NAME_CHARS): RFC 9110 token characters, lower case only. Anything else in
 * a name (RFC 9113 §8.2.1 forbids controls, SP, upper case and a colon after the first octet) makes nghttp2 drop the
 * field without a word, which is what this check exists to catch.
 */
const NAME_OCTET = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz") NAME_OCTET[c.charCodeAt(0)] = 1;

/**
 * The Huffman code (Appendix B) as a binary tree: node n's children are TREE[2n] (bit 0) and TREE[2n + 1] (bit 1).
 * A child above 0 is a node, below 0 is the leaf of symbol (−child − 1), 0 is no code. Node 0 is the root.
 */
const TREE = buildTree();

function buildTree(): Int32Array {
  const tree = new Int32Array(2 * 257);
  let nodes = 1;
  for (let symbol = 0; symbol <= 256; symbol++) {
    const code = HUFFMAN_CODES[symbol]!;
    let node = 0;
    for (let bit = HUFFMAN_LENGTHS[symbol]! - 1; bit >= 0; bit--) {
      const slot = 2 * node + ((code >>> bit) & 1);
      if (bit === 0) tree[slot] = -symbol - 1;
      else node = tree[slot] ||= nodes++;
    }
  }
  return tree;
}

const EOS = 256;
const STATIC_ENTRIES = 61;
/** Octets an entry costs beyond its name and value (§4.1). */
const ENTRY_OVERHEAD = 32;

/**
 * The decoding state of one direction of one connection. Every header block the peer sends must pass through
 * `check`, in order, or the dynamic table goes out of step with nghttp2's.
 */
export class HpackCheck {
  private readonly entries: Entry[] = []; // oldest first
  private used = 0;
  private maxTableSize: number;
  private block: Buffer = Buffer.alloc(0);
  private at = 0;
  // The last string read (set by readString, to keep the per-field path free of allocations).
  private stringLength = 0;
  private stringBad = false;

  /** `settingsMaxTableSize`: the SETTINGS_HEADER_TABLE_SIZE this side advertised (node:http2's default is 4,096). */
  constructor(private readonly settingsMaxTableSize = 4_096) {
    this.maxTableSize = settingsMaxTableSize;
  }

  /** The dynamic table's size in octets as §4.1 counts it (nghttp2 reports the same as `inflateDynamicTableSize`). */
  get tableSize(): number {
    return this.used;
  }

  /** Reads one whole header block. True when a field in it is malformed (RFC 9113 §8.2.1). Throws HpackError. */
  check(block: Buffer): boolean {
    this.block = block;
    this.at = 0;
    let malformed = false;
    while (this.at < block.length) {
      const first = block[this.at]!;
      if (first & 0x80) {
        // §6.1 indexed field: a static entry is always valid.
        const index = this.readInteger(7);
        if (index === 0) throw new HpackError('index 0');
        if (index > STATIC_ENTRIES && this.entry(index).bad) malformed = true;
      } else if (first & 0x40) {
        if (this.readLiteral(6, true)) malformed = true; // §6.2.1 with incremental indexing
      } else if (first & 0x20) {
        // §6.3 dynamic table size update
        const size = this.readInteger(5);
        if (size > this.settingsMaxTableSize) throw new HpackError(`table size ${size} over the ${this.settingsMaxTableSize} advertised`);
        this.maxTableSize = size;
        this.evict();
      } else if (this.readLiteral(4, false)) {
        malformed = true; // §6.2.2 without indexing, §6.2.3 never indexed
      }
    }
    this.block = EMPTY;
    return malformed;
  }

  /** A literal field (§6.2); adds it to the table when `indexed`. True when the field is malformed. */
  private readLiteral(prefixBits: number, indexed: boolean): boolean {
    const index = this.readInteger(prefixBits);
    let nameLength: number;
    let nameBad: boolean;
    if (index === 0) {
      this.readString(true);
      nameLength = this.stringLength;
      nameBad = this.stringBad;
    } else if (index <= STATIC_ENTRIES) {
      nameLength = STATIC_NAME_LENGTHS[index]!;
      nameBad = false;
    } else {
      const e = this.entry(index);
      nameLength = e.nameLength;
      nameBad = e.nameBad;
    }
    this.readString(false);
    const bad = nameBad || this.stringBad;
    if (indexed) this.add({ size: nameLength + this.stringLength + ENTRY_OVERHEAD, nameLength, nameBad, bad });
    return bad;
  }

  private entry(index: number): Entry {
    const e = this.entries[this.entries.length - (index - STATIC_ENTRIES)];
    if (e === undefined) throw new HpackError(`index ${index} beyond the table`);
    return e;
  }

  /** §4.4: an entry larger than the table empties it and is not added. */
  private add(e: Entry): void {
    if (e.size > this.maxTableSize) {
      this.entries.length = 0;
      this.used = 0;
      return;
    }
    this.entries.push(e);
    this.used += e.size;
    this.evict();
  }

  private evict(): void {
    while (this.used > this.maxTableSize) this.used -= this.entries.shift()!.size;
  }

  /** §5.1: an integer with an N-bit prefix. */
  private readInteger(prefixBits: number): number {
    const b = this.block;
    const max = (1 << prefixBits) - 1;
    let value = b[this.at++]! & max;
    if (value < max) return value;
    for (let shift = 0; ; shift += 7) {
      if (this.at >= b.length) throw new HpackError('integer cut off');
      if (shift > 21) throw new HpackError('integer too large');
      const octet = b[this.at++]!;
      value += (octet & 0x7f) * 2 ** shift;
      if ((octet & 0x80) === 0) return value;
    }
  }

  /** §5.2: a string literal, plain or Huffman-coded. Sets stringLength (decoded octets) and stringBad. */
  private readString(isName: boolean): void {
    if (this.at >= this.block.length) throw new HpackError('string cut off');
    const huffman = (this.block[this.at]! & 0x80) !== 0;
    const length = this.readInteger(7);
    const end = this.at + length;
    if (end > this.block.length) throw new HpackError('string longer than the block');
    const octets = huffman ? huffmanOctets(this.block, this.at, end) : this.block.subarray(this.at, end);
    this.at = end;
    this.stringLength = octets.length;
    this.stringBad = isName ? badName(octets) : badValue(octets);
  }
}

const EMPTY = Buffer.alloc(0);

/** §5.2: decodes a Huffman-coded string; the padding must be under 8 bits of EOS's leading ones. */
function huffmanOctets(b: Buffer, start: number, end: number): Uint8Array {
  // A code is at least 5 bits, so the decoded string is at most 8/5 of the coded one.
  const out = new Uint8Array(Math.ceil(((end - start) * 8) / 5));
  let n = 0;
  let node = 0;
  let depth = 0; // bits into the current code
  let ones = true; // every bit of the current (unfinished) code was 1
  for (let i = start; i < end; i++) {
    const octet = b[i]!;
    for (let bit = 7; bit >= 0; bit--) {
      const one = (octet >>> bit) & 1;
      const next = TREE[2 * node + one]!;
      if (next < 0) {
        const symbol = -next - 1;
        if (symbol === EOS) throw new HpackError('EOS inside a Huffman string');
        out[n++] = symbol;
        node = 0;
        depth = 0;
        ones = true;
      } else if (next === 0) {
        throw new HpackError('not a Huffman code');
      } else {
        node = next;
        depth++;
        ones &&= one === 1;
      }
    }
  }
  if (depth > 7 || !ones) throw new HpackError('bad Huffman padding');
  return out.subarray(0, n);
}

/** A name nghttp2 would drop: empty, or an octet outside lower-case token characters (a pseudo-header's leading colon aside). */
export function badName(octets: Uint8Array): boolean {
  if (octets.length === 0) return true;
  for (let i = octets[0] === 0x3a && octets.length > 1 ? 1 : 0; i < octets.length; i++) {
    if (NAME_OCTET[octets[i]!] === 0) return true;
  }
  return false;
}

/**
 * A value nghttp2 would drop: RFC 9113 §8.2.1 forbids NUL, LF and CR anywhere and SP or HTAB at either end; nghttp2
 * (VALID_HD_VALUE_CHARS, as RFC 9110's field-vchar) also refuses the other control characters but HTAB, and DEL.
 */
export function badValue(octets: Uint8Array): boolean {
  const n = octets.length;
  if (n === 0) return false;
  const first = octets[0]!;
  const last = octets[n - 1]!;
  if (first === 0x20 || first === 0x09 || last === 0x20 || last === 0x09) return true;
  for (let i = 0; i < n; i++) {
    const c = octets[i]!;
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return true;
  }
  return false;
}
