// The built addon itself: on Linux the functions of the request path sit together in `.text.hot`
// (src/hot_path.ld, passed to the linker by build.rs). If a rename left none of its names matching, the linker
// would drop the empty section and requests would pay for scattered code again: regenerate with
// `node bench/hot-path.mjs`.
import test from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')

/** Section name -> size of a 64-bit little-endian ELF file. */
function elfSections(file) {
  const b = fs.readFileSync(file)
  assert.equal(b.toString('latin1', 1, 4), 'ELF', `${file} is an ELF file`)
  assert.equal(b[4], 2, '64-bit')
  assert.equal(b[5], 1, 'little-endian')
  const shoff = Number(b.readBigUInt64LE(0x28))
  const shentsize = b.readUInt16LE(0x3a)
  const shnum = b.readUInt16LE(0x3c)
  const shstrndx = b.readUInt16LE(0x3e)
  const header = (i) => shoff + i * shentsize
  const names = Number(b.readBigUInt64LE(header(shstrndx) + 0x18))
  const sections = new Map()
  for (let i = 0; i < shnum; i++) {
    const at = header(i)
    const start = names + b.readUInt32LE(at)
    const name = b.toString('latin1', start, b.indexOf(0, start))
    sections.set(name, Number(b.readBigUInt64LE(at + 0x20)))
  }
  return sections
}

test('on Linux the request path is packed in one .text.hot section of the addon', { skip: process.platform !== 'linux' }, () => {
  const addons = fs.readdirSync(ROOT).filter((f) => /^opencode-qwen-oauth\.linux-.*\.node$/.test(f))
  assert.ok(addons.length > 0, 'the addon is built (npm run build)')
  for (const addon of addons) {
    const sections = elfSections(path.join(ROOT, addon))
    assert.ok(sections.has('.text'), `${addon}: .text`)
    const hot = sections.get('.text.hot')
    assert.ok(hot !== undefined, `${addon}: no .text.hot section (regenerate src/hot_path.ld: node bench/hot-path.mjs)`)
    // Dozens of functions at least; a few stray matches would not be the request path.
    assert.ok(hot > 64 * 1024, `${addon}: .text.hot holds only ${hot} bytes`)
    assert.ok(hot < sections.get('.text'), `${addon}: .text.hot is a part, not the whole`)
  }
})
