import { describe, expect, it } from 'vitest';
import { lit, withDuckDB } from '../../lib/etl/duck.ts';
import { typedExprs } from '../../lib/etl/typing.ts';

/** Text a CSV may hold in an integer column, including what DuckDB's casts treat in surprising ways. */
const TEXTS = [
  '3',
  '-42',
  '+4',
  ' 7 ',
  '00012',
  '-0',
  '3.0',
  '3.5',
  '-2.5',
  '1.',
  '.5',
  '3e2',
  '3E2',
  '3.5e0',
  '35e-1',
  '1e400',
  '1_000',
  '0x10',
  '0b11',
  '+-1',
  '--1',
  '1,000',
  '4.0000000000000001',
  '9007199254740991',
  '9007199254740993',
  '9007199254740993.0',
  '9223372036854775807',
  '9223372036854775808',
  '-9223372036854775808',
  'inf',
  'NaN',
  'NA',
  '',
  'abc',
];

describe('typedExprs', () => {
  it('types integer text exactly as the plain rule does: integral values only, never rounded', async () => {
    const source = { name: 's', expr: 's', duckType: 'VARCHAR' };
    const typed = typedExprs({ name: 's', type: 'integer', nullable: true }, source, true);
    // The rule the shortcut must reproduce: text with '.', 'e' or 'E' must be an integral number, anything
    // else goes through DuckDB's integer cast.
    const d = 'TRY_CAST(s AS DOUBLE)';
    const reference = `CASE WHEN contains(s, '.') OR contains(s, 'e') OR contains(s, 'E')
      THEN CASE WHEN ${d} = trunc(${d}) THEN TRY_CAST(${d} AS BIGINT) END ELSE TRY_CAST(s AS BIGINT) END`;
    const rows = await withDuckDB((duck) =>
      duck.all(
        `SELECT s, CAST(${typed.value} AS VARCHAR) AS got, CAST(${reference} AS VARCHAR) AS expected
         FROM (VALUES ${TEXTS.map((text) => `(${lit(text)})`).join(', ')}) t(s)`,
      ),
    );
    expect(rows).toHaveLength(TEXTS.length);
    for (const row of rows) expect(row.got, JSON.stringify(row.s)).toBe(row.expected);
    const value = (text: string) => rows.find((row) => row.s === text)?.got;
    expect([value('3.0'), value('3.5'), value('35e-1'), value('+4')]).toEqual(['3', null, null, '4']);
    expect(value('9007199254740993')).toBe('9007199254740993');
    expect(value('9007199254740993.0')).toBe('9007199254740992');
  });
});
