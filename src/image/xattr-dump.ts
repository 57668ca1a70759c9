/** File names in the dump format of getfattr and setfattr (`# file: ./a\040b`), both ways. */

/** getfattr/setfattr dump-format escaping of file names (octal escapes for unsafe bytes). */
export function escapeAttrPath(rel: string): string {
  const bytes = Buffer.from(rel === '' ? '.' : `./${rel}`);
  let out = '';
  for (const b of bytes) {
    if (b <= 0x20 || b === 0x5c || b === 0x7f || b >= 0x80 || b === 0x3d) out += `\\${b.toString(8).padStart(3, '0')}`;
    else out += String.fromCharCode(b);
  }
  return out;
}

export function unescapeAttrPath(text: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '\\' && /^[0-7]{3}$/.test(text.slice(i + 1, i + 4))) {
      bytes.push(parseInt(text.slice(i + 1, i + 4), 8));
      i += 3;
    } else {
      bytes.push(...Buffer.from(text[i]!));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}
