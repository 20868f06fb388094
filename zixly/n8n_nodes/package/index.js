'use strict';
// n8n finds the nodes through package.json's "n8n" section (community package) or by
// scanning for *.node.js / *.credentials.js (N8N_CUSTOM_EXTENSIONS); this entry point only
// exposes the rules for other JavaScript (and tests).
module.exports = require('./lib/au-rules.js');
