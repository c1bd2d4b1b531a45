#!/usr/bin/env node
// The chronicle command: runs src/bin/chronicle.ts through tsx (the package ships its
// TypeScript sources).
import { register } from "tsx/esm/api"

register()
await import("../src/bin/chronicle.ts")
