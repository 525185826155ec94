import { expect, it } from 'vitest';
import { VERSION } from './index';
it('exports a version', () => expect(VERSION).toMatch(/^\d+\.\d+\.\d+$/));
