"""The reasoning stage: a vision-language model reads the image and the query and answers a box
and points in text. Model families (prompt, answer format, frame), the reply format and its
parsers, the chat both backends send, and the backends (`local.Reasoner`,
`remote.RemoteReasoner`) behind one interface (`backend`)."""
