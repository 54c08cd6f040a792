import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../lib/core/errors.ts';
import { parseCsv } from '../../lib/serving/csv.ts';
import { PayloadTooLargeError } from '../../lib/serving/errors.ts';

describe('parseCsv (request bodies)', () => {
  it('reads quoting, CRLF, a BOM and blank lines; unquoted empty is missing, quoted empty is ""', () => {
    const text = '\ufeff1,"a,b",,""\r\n\r\n"say ""hi""",2\n"multi\nline",x,\n';
    expect(parseCsv(text, 10)).toEqual([
      ['1', 'a,b', null, ''],
      ['say "hi"', '2'],
      ['multi\nline', 'x', null],
    ]);
  });

  it.each([
    ['"abc,1,2', /^CSV line \d+: unterminated quoted field/],
    ['1,"ab"c,3', /^CSV line 1: unexpected character after a closing quote/],
    ['1,2\n3,a"b', /^CSV line 2: a quote inside an unquoted field/],
  ])('rejects %j with the line', (text, message) => {
    let error: unknown;
    try {
      parseCsv(text, 10);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as Error).message).toMatch(message);
  });

  it('refuses more rows than the limit with 413', () => {
    expect(parseCsv('1\n2\n3\n', 3)).toHaveLength(3);
    expect(() => parseCsv('1\n2\n3\n4\n', 3)).toThrow(PayloadTooLargeError);
  });
});
