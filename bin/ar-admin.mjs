#!/usr/bin/env node
// The admin CLI as an installed command (`ar-admin user add ...`), same as `npm run cli -- ...`.
import { register } from 'tsx/esm/api';

register();
await import('../cli/main.ts');
