import { packageTestConfig } from '../../vitest.shared';

// The global setup builds the native addon when it is missing or stale, so native tests never skip.
export default packageTestConfig({ globalSetup: ['./vitest.global-setup.ts'] });
