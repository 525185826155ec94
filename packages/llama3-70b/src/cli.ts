console.log('llama3-70b');
