export { VERSION } from '@w8a16/quant-core';
