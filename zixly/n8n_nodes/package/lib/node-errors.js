'use strict';
/**
 * Turning a rule or ingest failure into the error n8n shows on the node.
 *
 * n8n-workflow's NodeOperationError gives the editor the node name, the item index and a
 * description; but requiring an n8n package when n8n loads the node file ties the package
 * to one n8n install layout. So it is required lazily, when an error actually happens
 * (n8n has put its own node_modules on NODE_PATH by then), and a plain Error carrying the
 * same text is used if it cannot be found.
 */

function nodeOperationError() {
	try {
		// eslint-disable-next-line global-require
		return require('n8n-workflow').NodeOperationError;
	} catch {
		return null;
	}
}

/**
 * @param {{getNode(): object}} context the node's execute context (`this`)
 * @param {string} message one line, what went wrong
 * @param {{itemIndex?: number, description?: string}} [options]
 */
function nodeError(context, message, options = {}) {
	const NodeOperationError = nodeOperationError();
	if (NodeOperationError) {
		return new NodeOperationError(context.getNode(), message, options);
	}
	const error = new Error(message);
	error.description = options.description;
	error.itemIndex = options.itemIndex;
	return error;
}

module.exports = { nodeError };
